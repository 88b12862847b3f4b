"""The WDF-v1 criteria as pure, vectorised functions over arrays (no I/O; the streaming pass feeds them).

One module per criterion:
- `support` (C1): firing tokens, documents, density; dense antipodal pairing (Sun et al. 2025).
- `stability` (C2): Hungarian matching against other seeds on min(decoder cos, encoder cos); PW-MCC.
- `function` (C3): increase of squared reconstruction error when a latent is removed, against a random-direction null.
- `mdl` (C4): bits saved in reconstruction against the latent's own description length (SAEBench MDL form).
- `atomicity` (C5, tag): near-duplicate decoder rows; composites under a small meta-SAE.
- `geometry` (C6, tag): clusters of decoder rows scored by separability S and mixture index M (Engels et al. 2024).

Conventions shared by all of them (what the orchestration must produce):
- `F` latents of the reference SAE, `d` = d_in, `T` tokens scored (masked tokens already dropped).
- Activations are non-negative (post-activation SAE codes) as `scipy.sparse` matrices: `acts_csc` (T, F) for
  per-latent work, `acts_csr` (n, F) per streamed chunk; the row order is the token order of the cache.
- Encoder rows are `W_enc.T` (F, d) (sae-lens stores `W_enc` as (d, F)); decoder rows are `W_dec` (F, d), in the
  units the activations were decoded with (the SAE's normalised activation space).
- An antipodal `partner` array (F,) int64 holds the partner latent or -1; paired latents are judged as one signed
  feature, so each criterion can take `partner` and then reports the pair's value on both members.
"""
