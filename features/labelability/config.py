"""The settings of LBL-v1: the `[labelability]` section of the definition file, declared with `activations.settings`.

Every constant that shapes LBL's numbers is a setting here (so it is recorded with the definition the results were
scored under), including those that used to be literals in the code: the rule describer's starting C and intercept
scaling, the fewest positives behind a Spearman correlation and the number of activation deciles.
"""

from __future__ import annotations

from dataclasses import dataclass

from activations.settings import SettingError, Settings, choice, integer, number, switch, text
from features.labelability.embedding import backend_problem


@dataclass(frozen=True)
class LBLConfig(Settings):
    """Settings of LBL-v1 (the `[labelability]` table of the definition file, by field name)."""

    window: int = integer(16, 1, 512)
    """Tokens before the centre token in a window (the window is these plus the centre)."""
    max_positives: int = integer(400, 1, 10**6)
    """Cap on positive windows per latent, shared equally by the `n_deciles` activation deciles."""
    random_neg_per_pos: float = number(1.0, 0.0, 100.0)
    """Random non-firing windows per positive."""
    hard_neg_per_pos: float = number(1.0, 0.0, 100.0)
    """Hard negatives per positive: non-firing windows that contain one of the latent's top firing tokens."""
    hard_top_tokens: int = integer(5, 1, 1000)
    """How many of the latent's most frequent firing token ids define the hard negatives."""
    test_fraction: float = number(0.5, 0.0, 1.0, lo_open=True, hi_open=True)
    """Fraction of documents held out for testing (the split is by document, one split for all latents)."""
    token_smoothing: float = number(1.0, 0.0, 1e6, lo_open=True, hi_open=True)
    """Additive smoothing of P(fire | token) towards the latent's base rate, in pseudo-occurrences."""
    rule_max_terms: int = integer(8, 1, 1000)
    """Most non-zero weights a rule may keep (so a person can read it)."""
    rule_bag: int = integer(8, 1, 512)
    """Preceding tokens in the rule's bag-of-tokens features (at most `window`)."""
    rule_screen: int = integer(64, 1, 10**6)
    """Features kept by univariate screening before the L1 fit (cheaper than a full path; see describers)."""
    rule_c_steps: int = integer(12, 1, 100)
    """Most doublings of the L1 inverse strength C, starting from sklearn's l1_min_c."""
    semantic_k: int = integer(10, 1, 10**4)
    """Nearest train positives (and negatives) averaged by the semantic describer."""
    bootstrap: int = integer(200, 1, 10**5)
    """Bootstrap resamples of the test windows for the upper bound."""
    bootstrap_level: float = number(0.9, 0.0, 1.0, lo_open=True, hi_open=True)
    """Two-sided confidence level; `labelability_hi` is the interval's upper end."""
    bootstrap_by_document: bool = switch(True)
    """Resample test documents (True) rather than test windows stratified by class (False): firings of one
    document are correlated, so a window-level bootstrap understates the uncertainty of clustered latents."""
    min_test_pos: int = integer(10, 1, 10**6)
    """Below this many test positives a latent is not scored (NaN, best_describer "none")."""
    prune: bool = switch(True)
    """Skip the rule and semantic describers when the token describer is already good enough on train."""
    prune_token_auroc: float = number(0.95, 0.5, 1.0)
    """Train AUROC of the token describer at which pruning skips the costlier describers."""
    rule_c_start: float = number(1.5, 0.0, 1e6, lo_open=True)
    """The rule's search for C starts at this multiple of sklearn's l1_min_c (the C below which every weight is
    zero), so the first fit already keeps a term or two."""
    rule_intercept_scaling: float = number(10.0, 0.0, 1e6, lo_open=True)
    """liblinear's intercept_scaling for the rule: the intercept is a weight on a constant feature of this value,
    so a large value keeps the L1 penalty from shrinking the intercept towards 0."""
    spearman_min_pos: int = integer(3, 2, 10**6)
    """Fewest test positives behind the `spearman` column (NaN below)."""
    n_deciles: int = integer(10, 1, 100)
    """Activation rank quantiles the positives are stratified over; `decile_auroc` has one value per quantile."""
    strong_deciles: int = integer(3, 1, 100)
    """The strong firings: the top this many of the `n_deciles` activation quantiles. `labelability_strong` is LBL
    on them alone (every describer's held-out scores; these quantiles' positives against all negatives), and the
    flag needs it below `max_lbl` too: a latent whose strong firings are labelled is what a person names from its
    top examples, whatever its weak firings (with TopK often noise) do."""
    position_exact: int = integer(16, 1, 4096)
    """Position look-ups (`position` describer): indices below this get a bucket each; from it on, buckets are
    log2-spaced, [e * 2^k, e * 2^(k+1)) for e = this value."""
    lookup_smoothing: float = number(1.0, 0.0, 1e6, lo_open=True, hi_open=True)
    """Additive smoothing of the `position` and `properties` look-ups towards the latent's rate in the train windows,
    in pseudo-windows (a bucket seen in no train window gets that rate)."""
    properties_c: float = number(1.0, 0.0, 1e6, lo_open=True)
    """Inverse L2 strength of the `properties` describer's logistic fit over the token-property indicators."""
    document_top_terms: int = integer(8, 1, 1000)
    """Terms the `document` describer shows in its readable form (and offers to compositions as indicators)."""
    semantic_backend: str = text("tfidf")
    """The semantic describer's space: "tfidf" (TF-IDF of the window's tokens: cheap, shared words only),
    "minilm" (the embedded all-MiniLM-L6-v2's sentence embedding of the window text: sees topics in other words,
    costs a forward pass per distinct window) or a local folder holding a sentence-transformers model."""
    semantic_batch: int = integer(256, 1, 65536)
    """Windows per forward pass of the semantic embedding backend."""
    dense_target: str = choice("activation", "activation", "firing")
    """What LBL predicts for a dense latent (the `dense` column: density > `[support] max_density`): "activation"
    (its top activation quantiles against its bottom ones plus non-firing windows) or "firing" (as for the rest)."""
    dense_extreme: int = integer(3, 1, 50)
    """For the activation target: how many of the `n_deciles` activation quantiles at the top are positives and at
    the bottom are negatives (the middle ones are left out: values near the median say little either way); at most
    half of `n_deciles` is used (with one quantile there is no activation target, and dense latents use firing)."""

    centre_neg_per_pos: float = number(0.5, 0.0, 100.0)
    """Most centre hard negatives per positive: non-firing occurrences of the latent's anchor tokens as the centre
    token, at most as many per positive as the anchors have non-firing per firing occurrences (0: none, the sampling
    of LBL-v1; conditional labelability then rests on the random and hard negatives that happen to sit on an anchor
    token, usually too few to be measured)."""
    anchor_coverage: float = number(0.8, 0.0, 1.0, lo_open=True)
    """The anchor tokens are the latent's top firing tokens (train documents) up to this share of its firings..."""
    anchor_max_tokens: int = integer(5, 1, 1000)
    """... but at most this many (the `anchor_coverage` column says how much of its firings they cover)."""

    def check(self) -> None:
        if self.rule_bag > self.window:
            raise SettingError(
                "rule_bag", self.rule_bag, f"is out of range [1, {self.window}] (at most `window`)"
            )
        if self.strong_deciles > self.n_deciles:
            raise SettingError(
                "strong_deciles", self.strong_deciles, f"must be at most n_deciles ({self.n_deciles})"
            )
        if self.max_positives < self.n_deciles:
            raise SettingError(
                "max_positives", self.max_positives, f"must be at least n_deciles ({self.n_deciles})"
            )
        problem = backend_problem(self.semantic_backend)
        if problem:
            raise SettingError("semantic_backend", self.semantic_backend, problem)
        if self.random_neg_per_pos + self.hard_neg_per_pos <= 0:
            raise SettingError(
                "random_neg_per_pos", self.random_neg_per_pos, "and hard_neg_per_pos cannot both be 0"
            )
