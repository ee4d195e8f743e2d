"""A Gaussian mixture in d dimensions with its exact denoiser, for testing samplers and losses.

For data x0 ~ sum_k w_k N(mu_k, Sigma_k) and x = x0 + sigma n, n ~ N(0, I), the ideal denoiser is
E[x0 | x] = sum_k p(k | x) (mu_k + Sigma_k (Sigma_k + sigma^2 I)^-1 (x - mu_k)), with
p(k | x) proportional to w_k N(x; mu_k, Sigma_k + sigma^2 I). Everything runs in float64 on images
shaped [N, *image_shape] with prod(image_shape) = d, so the mixture stands in for a trained network.
"""

from __future__ import annotations

import math

import torch


class GaussianMixture:
    """Exact denoiser D(x, sigma, class_labels=None) of a Gaussian mixture, plus its statistics."""

    def __init__(self, weights, means, covariances, image_shape, sigma_min=0.002, sigma_max=80.0):
        self.weights = torch.as_tensor(weights, dtype=torch.float64)  # [K]
        self.means = torch.as_tensor(means, dtype=torch.float64)  # [K, d]
        self.covariances = torch.as_tensor(covariances, dtype=torch.float64)  # [K, d, d]
        self.image_shape = tuple(image_shape)
        self.sigma_min, self.sigma_max = sigma_min, sigma_max
        if math.prod(self.image_shape) != self.means.shape[1]:
            raise ValueError(f"image shape {self.image_shape} does not hold {self.means.shape[1]} dimensions")
        # Sigma_k = U_k diag(lam_k) U_k^T, so (Sigma_k + s^2 I)^-1 = U_k diag(1 / (lam_k + s^2)) U_k^T.
        self.eigenvalues, self.eigenvectors = torch.linalg.eigh(self.covariances)  # [K, d], [K, d, d]

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    def _eigen_terms(self, x: torch.Tensor, sigma):
        """Per component k, for x = x0 + sigma n: the coordinates y of x - mu_k in the eigenbasis of Sigma_k,
        the variances lam_k + sigma^2 along them (both [N, K, d]) and log w_k + log N(x; mu_k, Sigma_k +
        sigma^2 I) ([N, K])."""
        x = x.to(torch.float64).reshape(x.shape[0], 1, self.dim)
        sigma = torch.as_tensor(sigma, dtype=torch.float64, device=x.device).reshape(-1, 1, 1)
        variances = self.eigenvalues[None] + sigma**2
        y = _rowwise_matmul(x - self.means[None], self.eigenvectors)
        log_likelihood = -0.5 * ((y**2 / variances) + variances.log() + math.log(2 * math.pi)).sum(-1)
        return y, variances, self.weights.log()[None] + log_likelihood

    def log_posterior(self, x: torch.Tensor, sigma) -> torch.Tensor:
        """log p(k | x) for x = x0 + sigma n: [N, K]."""
        return torch.log_softmax(self._eigen_terms(x, sigma)[2], dim=1)

    def log_density(self, x: torch.Tensor, sigma) -> torch.Tensor:
        """log p_sigma(x), the density of x0 + sigma n: [N]."""
        return torch.logsumexp(self._eigen_terms(x, sigma)[2], dim=1)

    def __call__(self, x: torch.Tensor, sigma, class_labels=None) -> torch.Tensor:
        """E[x0 | x0 + sigma n = x], same shape as x, float64."""
        y, variances, log_joint = self._eigen_terms(x, sigma)
        # Per-component Wiener filter in the eigenbasis, back to pixel coordinates, then the posterior mix.
        filtered = (self.eigenvalues[None] / variances) * y
        component_means = self.means[None] + _rowwise_matmul(filtered, self.eigenvectors.transpose(1, 2))
        posterior = torch.softmax(log_joint, dim=1)  # [N, K]
        return (posterior[:, :, None] * component_means).sum(1).reshape(x.shape)

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """n data samples [n, *image_shape] and their components [n]."""
        components = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        noise = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        factors = self.eigenvectors * self.eigenvalues.sqrt()[:, None, :]  # Sigma_k = F_k F_k^T
        x = self.means[components] + (factors[components] @ noise[:, :, None])[..., 0]
        return x.reshape(n, *self.image_shape), components

    def mean(self) -> torch.Tensor:
        """Mixture mean [d]."""
        return self.weights @ self.means

    def covariance(self) -> torch.Tensor:
        """Mixture covariance [d, d]: sum_k w_k (Sigma_k + mu_k mu_k^T) - mu mu^T."""
        second_moment = torch.einsum("k,kij->ij", self.weights, self.covariances) + torch.einsum(
            "k,ki,kj->ij", self.weights, self.means, self.means
        )
        return second_moment - torch.outer(self.mean(), self.mean())

    def ode_solution(self, x_start: torch.Tensor, sigma_start: float, sigma: float) -> torch.Tensor:
        """Exact probability-flow ODE solution from (x_start, sigma_start) to sigma; one component only.

        Along each eigen-direction of Sigma (eigenvalue lam), x - mu scales by
        sqrt((lam + sigma^2) / (lam + sigma_start^2)).
        """
        if len(self.weights) != 1:
            raise ValueError("the closed-form ODE solution holds for a single Gaussian")
        x_start = x_start.to(torch.float64)
        lam, u = self.eigenvalues[0], self.eigenvectors[0]
        gain = ((lam + sigma**2) / (lam + sigma_start**2)).sqrt()
        y = (x_start.reshape(-1, self.dim) - self.means[0]) @ u
        return (self.means[0] + (y * gain) @ u.T).reshape(x_start.shape)


def _rowwise_matmul(v: torch.Tensor, matrices: torch.Tensor) -> torch.Tensor:
    """v[n, k] @ matrices[k] for v [N, K, d], matrices [K, d, e], as elementwise products and sums in a fixed
    order, so that each row's result is bitwise the same at any batch size (BLAS kernels do not promise it)."""
    return sum(v[..., i, None] * matrices[None, :, i, :] for i in range(v.shape[-1]))


def _rotation(dim: int, seed: int) -> torch.Tensor:
    q, _ = torch.linalg.qr(
        torch.randn(dim, dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    )
    return q


def example_mixture(**kwargs) -> GaussianMixture:
    """Three well-separated components in d = 4 (images 1x2x2), unequal weights, full covariances."""
    scales = [[0.30, 0.50, 0.20, 0.40], [0.60, 0.25, 0.35, 0.30], [0.20, 0.30, 0.45, 0.25]]
    covariances = [
        _rotation(4, k) @ torch.diag(torch.tensor(s) ** 2).double() @ _rotation(4, k).T
        for k, s in enumerate(scales)
    ]
    means = [[2.0, -1.0, 0.5, 1.5], [-2.0, 1.5, -1.0, 0.0], [0.5, 2.0, 2.0, -2.5]]
    return GaussianMixture([0.5, 0.3, 0.2], means, torch.stack(covariances), (1, 2, 2), **kwargs)


def single_gaussian(**kwargs) -> GaussianMixture:
    """One Gaussian in d = 3 (images 3x1x1) with a full covariance and eigenvalues 0.04 .. 1."""
    covariance = (
        _rotation(3, 7) @ torch.diag(torch.tensor([0.04, 0.25, 1.0], dtype=torch.float64)) @ _rotation(3, 7).T
    )
    return GaussianMixture([1.0], [[0.5, -0.3, 0.2]], covariance[None], (3, 1, 1), **kwargs)
