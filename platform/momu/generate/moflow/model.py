"""MoFlow (Zang & Wang, KDD 2020) in torch, following the released code (calvin-zcx/moflow) layer by layer.

- Bond flow: Glow on the bond tensor [B, 4, N, N] (single, double, triple, no-bond): squeeze to
  [B, 4 f^2, N/f, N/f], then per coupling ActNorm -> (optional invertible 1x1 conv) -> affine coupling whose
  network is conv3x3-BN-ReLU layers; s = sigmoid(.), y_b = (x_b + t) * s.
- Atom flow: on the atom matrix [B, N, T], conditioned on the (normalised) bond tensor: per coupling ActNorm over
  atoms -> affine coupling that updates a few rows (atoms) from the others through a relational GCN and linear
  layers (BatchNorm over atoms, ReLU).
- Training input is dequantised (x + U(0, 1) * 0.6); the prior is N(0, exp(ln_var)) with one learned ln_var; the
  loss is MoFlow's negative log-likelihood in bits per dimension for each part.
- Reverse: bonds first (symmetrised, softmax over channels, one-hot argmax), then atoms given those bonds.

z is [B, N*T + 4*N*N], atom part first (MoFlow's layout; ZINC250k: 380 + 5,776 = 6,156).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import torch
from torch import nn
from torch.nn import functional as F

from momu.generate.moflow.config import MoFlowConfig
from momu.files import chmod_like_umask


# -- invertible building blocks ---------------------------------------------------------------------------------

class ActNorm(nn.Module):
    """Per-index affine on dim 1 with Glow's data-dependent init (first batch -> zero mean, unit std per index).
    [B, C, H, W] (bonds: per channel) or [B, N, T] (atoms: per atom row)."""

    def __init__(self, size: int, ndim: int):
        super().__init__()
        shape = (1, size) + (1,) * (ndim - 2)
        self.loc = nn.Parameter(torch.zeros(shape))
        self.scale = nn.Parameter(torch.ones(shape))
        self.register_buffer("initialized", torch.tensor(0, dtype=torch.uint8))

    @torch.no_grad()
    def initialize(self, x: torch.Tensor) -> None:
        flat = x.transpose(0, 1).reshape(x.shape[1], -1)
        self.loc.copy_(-flat.mean(1).view_as(self.loc))
        self.scale.copy_(1.0 / (flat.std(1).view_as(self.scale) + 1e-6))
        self.initialized.fill_(1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not int(self.initialized):
            self.initialize(x)
        per_index = math.prod(x.shape[2:])
        logdet = per_index * torch.log(torch.abs(self.scale)).sum()
        return self.scale * (x + self.loc), logdet.expand(x.shape[0])

    def reverse(self, y: torch.Tensor) -> torch.Tensor:
        return y / self.scale - self.loc


class InvConv1x1(nn.Module):
    """Glow's invertible 1x1 convolution over channels, from a random rotation; `lu` keeps it as P L (U + diag s)
    so the log-det is sum(log|s|)."""

    def __init__(self, channels: int, lu: bool):
        super().__init__()
        self.lu = lu
        q, _ = torch.linalg.qr(torch.randn(channels, channels, dtype=torch.float64))
        if not lu:
            self.weight = nn.Parameter(q.float())
            return
        p, lower, upper = torch.linalg.lu(q)
        s = torch.diagonal(upper)
        self.register_buffer("p", p.float())
        self.register_buffer("sign_s", torch.sign(s).float())
        self.register_buffer("l_mask", torch.tril(torch.ones(channels, channels), -1))
        self.register_buffer("eye", torch.eye(channels))
        self.lower = nn.Parameter(lower.float())
        self.log_s = nn.Parameter(torch.log(torch.abs(s)).float())
        self.upper = nn.Parameter(torch.triu(upper, 1).float())

    def matrix(self) -> torch.Tensor:
        if not self.lu:
            return self.weight
        return self.p @ (self.lower * self.l_mask + self.eye) @ (
            self.upper * self.l_mask.T + torch.diag(self.sign_s * torch.exp(self.log_s)))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        w = self.matrix()
        spatial = x.shape[2] * x.shape[3]
        logabsdet = self.log_s.sum() if self.lu else torch.linalg.slogdet(w.double())[1].float()
        return torch.einsum("oc,bchw->bohw", w, x), (spatial * logabsdet).expand(x.shape[0])

    def reverse(self, y: torch.Tensor) -> torch.Tensor:
        # float64 inverse: the channel count after the squeeze is large (ZINC: 1,444)
        inverse = torch.linalg.inv(self.matrix().double()).to(y.dtype)
        return torch.einsum("oc,bchw->bohw", inverse, y)


class AffineCoupling(nn.Module):
    """Glow coupling on channel halves: y_b = (x_b + t(x_a)) * sigmoid(log_s(x_a)). `swap` updates the first half
    from the second instead (MoFlow's conv_lu=2 alternates this in place of a 1x1 conv)."""

    def __init__(self, channels: int, hidden: list[int], swap: bool):
        super().__init__()
        self.swap = swap
        layers, last = [], channels // 2
        for width in hidden:
            layers += [nn.Conv2d(last, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU()]
            last = width
        layers.append(nn.Conv2d(last, channels, 3, padding=1))  # -> log_s and t, channels // 2 each
        self.net = nn.Sequential(*layers)

    def _halves(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a, b = x.chunk(2, 1)
        return (b, a) if self.swap else (a, b)

    def _join(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.cat([b, a] if self.swap else [a, b], 1)

    def _scale_shift(self, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        log_s, t = self.net(a).chunk(2, 1)
        return log_s, t

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a, b = self._halves(x)
        log_s, t = self._scale_shift(a)
        y_b = (b + t) * torch.sigmoid(log_s)
        return self._join(a, y_b), F.logsigmoid(log_s).flatten(1).sum(1)

    def reverse(self, y: torch.Tensor) -> torch.Tensor:
        a, y_b = self._halves(y)
        log_s, t = self._scale_shift(a)
        return self._join(a, y_b / torch.sigmoid(log_s) - t)


def squeeze(x: torch.Tensor, fold: int) -> torch.Tensor:
    """[B, C, H, W] -> [B, C f^2, H/f, W/f] (each f x f patch becomes channels)."""
    b, c, h, w = x.shape
    x = x.view(b, c, h // fold, fold, w // fold, fold).permute(0, 1, 3, 5, 2, 4)
    return x.reshape(b, c * fold * fold, h // fold, w // fold)


def unsqueeze(x: torch.Tensor, fold: int) -> torch.Tensor:
    b, c, h, w = x.shape
    x = x.view(b, c // (fold * fold), fold, fold, h, w).permute(0, 1, 4, 2, 5, 3)
    return x.reshape(b, c // (fold * fold), h * fold, w * fold)


class GlowBlock(nn.Module):
    """squeeze -> couplings (ActNorm, mixing, affine coupling) -> unsqueeze."""

    def __init__(self, config: MoFlowConfig):
        super().__init__()
        self.fold = config.squeeze_fold
        channels = 4 * self.fold * self.fold
        self.norms = nn.ModuleList(ActNorm(channels, 4) for _ in range(config.bond_flows))
        self.mixers = nn.ModuleList(
            InvConv1x1(channels, lu=config.bond_mixing == "lu") if config.bond_mixing != "swap" else nn.Identity()
            for _ in range(config.bond_flows))
        self.couplings = nn.ModuleList(
            AffineCoupling(channels, config.bond_hidden, swap=config.bond_mixing == "swap" and i % 2 == 1)
            for i in range(config.bond_flows))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = squeeze(x, self.fold)
        logdet = h.new_zeros(h.shape[0])
        for norm, mixer, coupling in zip(self.norms, self.mixers, self.couplings):
            h, d1 = norm(h)
            if isinstance(mixer, InvConv1x1):
                h, d2 = mixer(h)
                logdet = logdet + d2
            h, d3 = coupling(h)
            logdet = logdet + d1 + d3
        return unsqueeze(h, self.fold), logdet

    def reverse(self, y: torch.Tensor) -> torch.Tensor:
        h = squeeze(y, self.fold)
        for norm, mixer, coupling in zip(reversed(self.norms), reversed(self.mixers), reversed(self.couplings)):
            h = coupling.reverse(h)
            if isinstance(mixer, InvConv1x1):
                h = mixer.reverse(h)
            h = norm.reverse(h)
        return unsqueeze(h, self.fold)


# -- atom flow --------------------------------------------------------------------------------------------------

def rescale_adj(adj: torch.Tensor) -> torch.Tensor:
    """MoFlow's bond normalisation: divide column j by its count over all channels and rows (with the no-bond
    channel every pair counts, so this is 1/N for one-hot bonds)."""
    counts = adj.sum(dim=(1, 2))
    inverse = torch.where(counts > 0, 1.0 / counts.clamp_min(1e-12), torch.zeros_like(counts))
    return inverse[:, None, None, :] * adj


class RelGraphConv(nn.Module):
    """Relational GCN layer: W_self h + sum_r A_r (W_r h), one W_r per bond channel."""

    def __init__(self, in_dim: int, out_dim: int, relations: int = 4):
        super().__init__()
        self.relations, self.out_dim = relations, out_dim
        self.self_linear = nn.Linear(in_dim, out_dim)
        self.edge_linear = nn.Linear(in_dim, out_dim * relations)

    def forward(self, adj: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        b, n, _ = h.shape
        # (out, relation) order of MoFlow's reshape, so weights map one to one
        m = self.edge_linear(h).view(b, n, self.out_dim, self.relations).permute(0, 3, 1, 2)
        return self.self_linear(h) + torch.matmul(adj, m).sum(1)


class GraphAffineCoupling(nn.Module):
    """Updates the masked rows (atoms): y = x_keep + (1 - mask) * (x + t) * sigmoid(log_s), where (log_s, t) come
    from the kept rows and the bonds."""

    def __init__(self, config: MoFlowConfig, masked_rows: list[int]):
        super().__init__()
        n, t = config.max_atoms, config.num_atom_types
        self.exact_logdet = config.atom_logdet == "exact"
        self.gnn, self.gnn_norms = nn.ModuleList(), nn.ModuleList()
        last = t
        for width in config.atom_gnn_hidden:
            self.gnn.append(RelGraphConv(last, width))
            self.gnn_norms.append(nn.BatchNorm1d(n))  # over atoms, as MoFlow
            last = width
        layers = []
        for width in config.atom_linear_hidden:
            layers += [nn.Linear(last, width), nn.BatchNorm1d(n), nn.ReLU()]  # [B, N, C]: over atoms
            last = width
        layers.append(nn.Linear(last, 2 * t))
        self.linear = nn.Sequential(*layers)
        keep = torch.ones(n, t)
        keep[masked_rows, :] = 0
        self.register_buffer("keep", keep)

    def _scale_shift(self, adj: torch.Tensor, x_keep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = x_keep
        for conv, norm in zip(self.gnn, self.gnn_norms):
            h = torch.relu(norm(conv(adj, h)))
        log_s, t = self.linear(h).chunk(2, dim=-1)
        return log_s, t

    def forward(self, adj: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x_keep = self.keep * x
        log_s, t = self._scale_shift(adj, x_keep)
        y = x_keep + (1 - self.keep) * (x + t) * torch.sigmoid(log_s)
        log_s_terms = F.logsigmoid(log_s)
        if self.exact_logdet:
            log_s_terms = log_s_terms * (1 - self.keep)
        return y, log_s_terms.flatten(1).sum(1)

    def reverse(self, adj: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        y_keep = self.keep * y
        log_s, t = self._scale_shift(adj, y_keep)
        return y_keep + (1 - self.keep) * (y / torch.sigmoid(log_s) - t)


class AtomFlow(nn.Module):
    """Blocks of (ActNorm over atoms, graph affine coupling); coupling i updates rows i*stride .. +size (mod N)."""

    def __init__(self, config: MoFlowConfig):
        super().__init__()
        n = config.max_atoms
        self.norms, self.couplings = nn.ModuleList(), nn.ModuleList()
        for _ in range(config.atom_blocks):
            for i in range(config.atom_flows):
                start = i * config.mask_row_stride
                rows = [r % n for r in range(start, start + config.mask_row_size)]
                self.norms.append(ActNorm(n, 3))
                self.couplings.append(GraphAffineCoupling(config, rows))

    def forward(self, adj: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logdet = x.new_zeros(x.shape[0])
        for norm, coupling in zip(self.norms, self.couplings):
            x, d1 = norm(x)
            x, d2 = coupling(adj, x)
            logdet = logdet + d1 + d2
        return x, logdet

    def reverse(self, adj: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        for norm, coupling in zip(reversed(self.norms), reversed(self.couplings)):
            z = norm.reverse(coupling.reverse(adj, z))
        return z


# -- MoFlow -----------------------------------------------------------------------------------------------------

def gaussian_nll(x: torch.Tensor, ln_var: torch.Tensor) -> torch.Tensor:
    """Elementwise -log N(x; 0, exp(ln_var))."""
    return 0.5 * (ln_var + math.log(2 * math.pi)) + 0.5 * x * x * torch.exp(-ln_var)


def _uniform(like: torch.Tensor, generator: Optional[torch.Generator]) -> torch.Tensor:
    if generator is None:
        return torch.rand_like(like)
    return torch.rand(like.shape, generator=generator, device=generator.device).to(like.device)


class MoFlow(nn.Module):
    def __init__(self, config: MoFlowConfig):
        super().__init__()
        self.config = config
        self.bond_flow = nn.ModuleList(GlowBlock(config) for _ in range(config.bond_blocks))
        self.atom_flow = AtomFlow(config)
        if config.learn_prior_var:
            self.ln_var = nn.Parameter(torch.zeros(1))
        else:
            self.register_buffer("ln_var", torch.zeros(1))

    @property
    def latent_size(self) -> int:
        return self.config.latent_size

    def prior_std(self) -> float:
        return float(torch.exp(0.5 * self.ln_var.detach()).item())

    def forward(self, atoms: torch.Tensor, bonds: torch.Tensor, dequantize: Optional[bool] = None,
                generator: Optional[torch.Generator] = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """atoms [B, N, T] one-hot, bonds [B, 4, N, N] one-hot over channels -> (z [B, latent], atom log-det [B],
        bond log-det [B]). Dequantisation noise U(0, 1) * noise_scale is added in training mode (or when asked)."""
        dequantize = self.training if dequantize is None else dequantize
        # The atom flow is conditioned on the clean bonds (MoFlow normalises them before adding noise).
        adj = rescale_adj(bonds)
        if dequantize:
            scale = self.config.noise_scale
            atoms = atoms + scale * _uniform(atoms, generator)
            bonds = bonds + scale * _uniform(bonds, generator)
        z_atoms, logdet_atoms = self.atom_flow(adj, atoms)
        h = bonds
        logdet_bonds = bonds.new_zeros(bonds.shape[0])
        for block in self.bond_flow:
            h, d = block(h)
            logdet_bonds = logdet_bonds + d
        return torch.cat([z_atoms.flatten(1), h.flatten(1)], 1), logdet_atoms, logdet_bonds

    def nll(self, z: torch.Tensor, logdet_atoms: torch.Tensor, logdet_bonds: torch.Tensor
            ) -> tuple[torch.Tensor, torch.Tensor]:
        """MoFlow's loss terms: negative log-likelihood in bits per dimension of the atom and the bond part
        (each log-det less size * log 2, the dequantisation bins of MoFlow's log_prob)."""
        a = self.config.atom_size
        terms = []
        for part, logdet in ((z[:, :a], logdet_atoms), (z[:, a:], logdet_bonds)):
            size = part.shape[1]
            nll = gaussian_nll(part, self.ln_var).sum(1) - (logdet - size * math.log(2.0))
            terms.append(nll.mean() / (size * math.log(2.0)))
        return terms[0], terms[1]

    def split(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """z -> (atom part [B, N, T], bond part [B, 4, N, N])."""
        c, b = self.config, z.shape[0]
        return (z[:, :c.atom_size].reshape(b, c.max_atoms, c.num_atom_types),
                z[:, c.atom_size:].reshape(b, 4, c.max_atoms, c.max_atoms))

    def reverse_bonds(self, z_bonds: torch.Tensor) -> torch.Tensor:
        """Bond part of z -> bond probabilities [B, 4, N, N] (symmetrised, softmax over channels)."""
        h = z_bonds
        for block in reversed(self.bond_flow):
            h = block.reverse(h)
        return ((h + h.transpose(2, 3)) / 2).softmax(dim=1)

    def reverse(self, z: torch.Tensor, bonds: Optional[torch.Tensor] = None, return_bond_probs: bool = False):
        """z [B, latent] -> (bonds [B, 4, N, N] one-hot, atoms [B, N, T] real-valued; argmax = type). The atoms are
        decoded given the one-hot bonds (or `bonds`, e.g. a real molecule's). Keeps gradients: wrap it in
        torch.no_grad() when none are needed. With return_bond_probs also the pre-argmax bond probabilities."""
        z_atoms, z_bonds = self.split(z)
        probs = None
        if bonds is None:
            probs = self.reverse_bonds(z_bonds)
            bonds = F.one_hot(probs.argmax(1), 4).permute(0, 3, 1, 2).to(z.dtype)
        atoms = self.atom_flow.reverse(rescale_adj(bonds), z_atoms)
        return (bonds, atoms, probs) if return_bond_probs else (bonds, atoms)

    def sample_z(self, n: int, temperature: float = 0.85, generator: Optional[torch.Generator] = None,
                 device=None) -> torch.Tensor:
        """z ~ N(0, (temperature * prior std)^2), MoFlow's sampling."""
        device = device or self.ln_var.device
        z = torch.randn(n, self.latent_size, generator=generator)  # on CPU: the same draws on any device
        return z.to(device) * temperature * self.prior_std()


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# -- saving and loading -----------------------------------------------------------------------------------------

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
FORMAT = "momu-moflow"


def save_moflow(model: MoFlow, directory, extra: Optional[dict] = None) -> Path:
    """A model directory: config.json (format, MoFlowConfig, extra facts) + model.safetensors."""
    import json

    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(directory / WEIGHTS_FILE))
    chmod_like_umask(directory / WEIGHTS_FILE)
    (directory / CONFIG_FILE).write_text(json.dumps(
        {"format": FORMAT, "config": model.config.model_dump(mode="json"), **(extra or {})}, indent=2) + "\n")
    return directory


def resolve_moflow_dir(source) -> Path:
    """A saved MoFlow directory, downloading MLflow URIs (models:/, runs:/) first."""
    text = str(source)
    if not text.startswith(("models:/", "runs:/", "mlflow-artifacts:/")):
        path = Path(text)
        if not (path / CONFIG_FILE).is_file():
            raise FileNotFoundError(f"no saved MoFlow model in {path} ({CONFIG_FILE} missing)")
        return path
    import mlflow

    from momu.tracking import resolve_tracking_uri

    mlflow.set_tracking_uri(resolve_tracking_uri())
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=text))
    for candidate in [local, *[p.parent for p in local.rglob(CONFIG_FILE)]]:
        if (candidate / WEIGHTS_FILE).is_file() and (candidate / CONFIG_FILE).is_file():
            return candidate
    raise FileNotFoundError(f"{text} downloaded to {local} but holds no saved MoFlow model")


def load_moflow(source, map_location: str = "cpu") -> MoFlow:
    """MoFlow from a directory written by save_moflow or an MLflow URI; in eval mode."""
    import json

    from safetensors.torch import load_file

    directory = resolve_moflow_dir(source)
    saved = json.loads((directory / CONFIG_FILE).read_text())
    if saved.get("format") != FORMAT:
        raise ValueError(f"{directory} is not a MoFlow model (format {saved.get('format')!r})")
    model = MoFlow(MoFlowConfig.model_validate(saved["config"]))
    model.load_state_dict(load_file(str(directory / WEIGHTS_FILE), device=map_location))
    return model.eval()
