"""Generation from trained snapshots: seeded sampling (``generate``), and evaluation of a snapshot at every
point of its plan with FID/KID in every feature space (``evaluation``); `fdm sample` and `fdm evaluate`
(``cli``)."""
