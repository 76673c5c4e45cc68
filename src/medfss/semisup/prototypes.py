"""The multi-prototype classifier (MPER sec. II-A, eq. 1-2) and the prototype contrastive loss (eq. 5).

Each of the N classes has K unit prototypes p_c^k in the d-dimensional
embedding space. A voxel embedding z is classified by its best prototype per
class (eq. 1):

    y^p_c = softmax_c( max_k cos(z, p_c^k) / tau_1 )

Prototypes are not trained by gradients. They start as the MiniBatchKMeans
centres of each class's embeddings and follow the data by a momentum update
(eq. 2): each voxel with (mixed) label c joins the cluster of its most similar
prototype of class c, and

    p_{t+1} = eta * p_t + (1 - eta) * mean(z in the cluster)      (then renormalised)

where unlabelled voxels count only when the teacher's confidence exceeds alpha.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.cluster import MiniBatchKMeans
from torch import Tensor, nn
from torch.nn import functional as F


def flatten_voxels(z: Tensor) -> Tensor:
    """[B, d, *spatial] -> [V, d], one row per voxel (V = B * prod(spatial))."""
    return z.movedim(1, -1).reshape(-1, z.shape[1])


class MultiPrototypeClassifier(nn.Module):
    """K prototypes per class (buffer ``prototypes`` [N, K, d], unit rows), eq. 1-2."""

    def __init__(self, num_classes: int, per_class: int, dim: int, *, tau: float = 0.1, momentum: float = 0.999):
        super().__init__()
        self.tau = tau
        self.momentum = momentum
        self.register_buffer("prototypes", F.normalize(torch.randn(num_classes, per_class, dim), dim=-1))

    def similarities(self, z: Tensor) -> Tensor:
        """cos(z, p_c^k): [V, d] -> [V, N, K]."""
        return torch.einsum("vd,nkd->vnk", F.normalize(z, dim=-1), self.prototypes)

    def forward(self, z: Tensor) -> Tensor:
        """Eq. 1 logits (before the softmax): [B, d, *spatial] -> [B, N, *spatial]."""
        best = self.similarities(flatten_voxels(z)).amax(dim=-1) / self.tau  # [V, N]
        return best.reshape(z.shape[0], *z.shape[2:], -1).movedim(-1, 1)

    def assign(self, z: Tensor, labels: Tensor) -> Tensor:
        """The index k* of each voxel's most similar prototype of its own class: [V, d], [V] -> [V]."""
        sims = self.similarities(z)  # [V, N, K]
        return sims[torch.arange(len(labels), device=z.device), labels].argmax(dim=-1)

    @torch.no_grad()
    def momentum_update(self, z: Tensor, labels: Tensor, keep: Tensor) -> None:
        """Eq. 2 for every (class, prototype) cluster that has kept voxels this step.

        z: [V, d] embeddings; labels: [V] (mixed) classes; keep: [V] bool (labelled
        voxels, and unlabelled ones above the confidence threshold).
        """
        z, labels = F.normalize(z[keep].detach(), dim=-1), labels[keep]
        if not len(z):
            return
        n, k, d = self.prototypes.shape
        cluster = labels * k + self.assign(z, labels)  # [V'] in 0..N*K-1
        sums = torch.zeros(n * k, d, device=z.device, dtype=z.dtype).index_add_(0, cluster, z)
        counts = torch.bincount(cluster, minlength=n * k)
        present = counts > 0
        flat = self.prototypes.reshape(n * k, d).clone()
        means = sums[present] / counts[present, None]
        flat[present] = F.normalize(self.momentum * flat[present] + (1 - self.momentum) * means, dim=-1)
        self.prototypes.copy_(flat.reshape(n, k, d))

    @torch.no_grad()
    def initialise(self, z: Tensor, labels: Tensor, seed: int = 0) -> None:
        """MiniBatchKMeans centres of each class's normalised embeddings ([V, d], [V]).

        A class with fewer voxels than K keeps its random prototypes.
        """
        z = F.normalize(z.detach().float(), dim=-1).cpu().numpy()
        labels = labels.cpu().numpy()
        n, k, _ = self.prototypes.shape
        for c in range(n):
            members = z[labels == c]
            if len(members) < k:
                continue
            kmeans = MiniBatchKMeans(n_clusters=k, random_state=seed, n_init=3, batch_size=1024).fit(members)
            centres = torch.from_numpy(np.asarray(kmeans.cluster_centers_, dtype=np.float32))
            self.prototypes[c] = F.normalize(centres, dim=-1).to(self.prototypes)


def prototype_infonce(z: Tensor, labels: Tensor, classifier: MultiPrototypeClassifier, tau: float) -> Tensor:
    """Eq. 5, averaged over voxels: -log( exp(z.p*/tau_2) / sum_{c,k} exp(z.p_c^k/tau_2) ).

    z: [V, d] (normalised here, so z.p is the cosine); labels: [V]. The
    positive p* is the voxel's closest prototype *of its (mixed) class*, the
    one it was assigned to in eq. 2; the other N*K - 1 prototypes are negatives.
    """
    if not len(z):
        return z.new_zeros(())
    n, k, _ = classifier.prototypes.shape
    logits = classifier.similarities(z).reshape(len(z), n * k) / tau  # [V, N*K]
    positive = labels * k + classifier.assign(z.detach(), labels)  # [V]
    return F.cross_entropy(logits, positive)
