"""The criteria of the feature definition: a registry (`registry.py`) and one module per criterion.

Each module holds the pure, vectorised functions of its criterion (no I/O; the streaming pass feeds them) and ends
with `CRITERION = Criterion(...)`, which declares everything else reads: its number and name, its settings section
(a `activations.settings.Settings` subclass: thresholds, defaults, one-line help per key), whether it gates
`well_defined` or is a tag, the columns and examples.h5 datasets it writes, the rows of the viewer's verdict table,
and `compute(ctx, cfg) -> Outcome` from the streaming pass's inputs (`registry.Context`).

- `support` (C1): firing tokens, documents, density; dense antipodal pairing (Sun et al. 2025).
- `stability` (C2): Hungarian matching against other seeds on min(decoder cos, encoder cos); PW-MCC.
- `function` (C3): increase of squared reconstruction error when a latent is removed, against a random-direction
  null; with the model at hand, also its attribution effect on the output (`function_model`).
- `mdl` (C4): bits saved in reconstruction against the latent's own description length (SAEBench MDL form).
- `atomicity` (C5, tag): near-duplicate decoder rows; composites under a small meta-SAE.
- `geometry` (C6, tag): clusters of decoder rows scored by separability S and mixture index M (Engels et al. 2024).

Adding a criterion C7 is one new module, `features/criteria/<name>.py` (its settings class, functions, and a
`CRITERION` with number 7), plus its tests (`tests/test_<name>.py`; `tests/features/test_registry.py` shows a toy C7 end to
end). Nothing else changes: `registry.criteria()` finds the module, and from its declaration the definition gains a
`[<name>]` section (`xenofeat definition show`, validation of users' files), the store's schema and STORE.md's table
gain its columns (regenerate STORE.md with `features.store.schema.update_store_md()`; a test says when), `score`
runs it in order, `well_defined` needs its pass column if it gates, and the viewer's verdict table shows its rows.
Only the shipped `default_definition.toml` must be regenerated (a test says so), since it lists every section.

Conventions shared by all of them (what the orchestration must produce):
- `F` latents of the reference SAE, `d` = d_in, `T` tokens scored (masked tokens already dropped).
- Activations are non-negative (post-activation SAE codes) as `scipy.sparse` matrices: `acts_csc` (T, F) for
  per-latent work, `acts_csr` (n, F) per streamed chunk; the row order is the token order of the cache.
- Encoder rows are `W_enc.T` (F, d) (sae-lens stores `W_enc` as (d, F)); decoder rows are `W_dec` (F, d), in the
  units the activations were decoded with (the SAE's normalised activation space).
- An antipodal `partner` array (F,) int64 holds the partner latent or -1; paired latents are judged as one signed
  feature, so each criterion can take `partner` and then reports the pair's value on both members.
"""
