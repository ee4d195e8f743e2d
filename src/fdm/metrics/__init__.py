"""Sample quality metrics: FID (Heusel et al. 2017) and KID (Binkowski et al. 2018) through clean-fid.

- ``features``: feature extractors, clean-fid's TorchScript Inception and the digits feature network.
- ``featnet``: trains the digits feature network (a small classifier) and saves it as TorchScript.
- ``stats``: reference statistics (mean, unbiased covariance, features for KID) over a prepared dataset.
- ``scores``: FID and KID of a feature set against reference statistics, named by extractor and mode.
"""
