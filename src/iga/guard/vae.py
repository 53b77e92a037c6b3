"""The guard's VAE step: which VAE really runs (the checkpoint's own, a file, or the recipe's separate VAE from the
model store), recorded as what it is; a missing or misfit VAE is a finding."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from iga.recipe.schema import Recipe
from iga.store import lookup as store_lookup

from .defaults import has_component
from .plan import Request, VaeIdentity
from .resolution import Resolver

def vae_step(r: Resolver, architecture: str, own_vae: bool | None = None) -> VaeIdentity | None:
    """The VAE; asking for one on a pixel-space model is hard (there is none to replace). ``own_vae``: whether the
    checkpoint holds a VAE of its own (None: not known, assumed)."""
    if r.req.vae is not None and not has_component(architecture, "vae"):
        r.hard("vae", f"{architecture} models sample pixels and have no VAE to replace", None, r.req.vae,
               "drop --vae")
        return None
    return _resolve_vae(r, r.recipe, r.req, architecture, own_vae)


def _resolve_vae(r: Resolver, recipe: Recipe, req: Request, architecture: str = "unknown",
                 own_vae: bool | None = None) -> VaeIdentity | None:
    """The VAE that will really run, as the plan records it. A recipe VAE that is a separate file (``embedded:
    false``) comes from the model store; when it is not there the checkpoint's own runs, and the plan says so."""
    spec = recipe.vae
    native = spec.id if spec else None
    if req.vae is None:
        if spec is None:
            return None
        if spec.embedded or not (spec.id or spec.sha256):
            return VaeIdentity(id=native, source="checkpoint")
        return _recipe_vae(r, spec, architecture, own_vae)
    if spec is not None and req.vae == native and not _is_vae_path(req.vae):
        return VaeIdentity(id=native, source="checkpoint") if spec.embedded else \
            _recipe_vae(r, spec, architecture, own_vae)
    if _is_vae_path(req.vae):
        path = Path(req.vae).expanduser().resolve()
        ident = _vae_file_identity(r, VaeIdentity(id=path.stem, source="file"), path)
    else:
        ident = _store_vae_by_id(r, req.vae, architecture)
    if ident.file_sha256 is None:  # not found: already refused
        return ident
    if spec is not None and _is_recipe_vae(spec, ident):
        return ident.model_copy(update={"id": native or ident.id})
    if native or (spec is not None and spec.sha256):
        r.soft("vae", "vae", f"VAE {ident.id!r} is not the recipe's {native or spec.sha256[:12]!r}; another VAE "
               "shifts colours and detail", native, ident.id, f"use the {native or 'recipe'} VAE")
    return ident


def _is_vae_path(value: str) -> bool:
    """A path (a file name with a weights suffix, or anything that exists) rather than a store id."""
    return Path(value).suffix in (".safetensors", ".ckpt", ".pt", ".bin") or Path(value).expanduser().exists()


def _is_recipe_vae(spec: Any, ident: VaeIdentity) -> bool:
    """Whether a VAE file is the one the recipe names: same hash as the recipe records (or as the store's file with
    the recipe's id), else the same name."""
    if spec.sha256:
        return ident.file_sha256 == spec.sha256
    entry, _ = store_lookup(spec.id, "vae") if spec.id and not spec.embedded else (None, None)
    return ident.file_sha256 == entry.sha256() if entry is not None else ident.id == spec.id


def _recipe_vae(r: Resolver, spec: Any, architecture: str, own_vae: bool | None) -> VaeIdentity | None:
    """The recipe's separate VAE file from the store; absent, the checkpoint's own VAE (soft, recorded as what it
    is) or, when the checkpoint has none, nothing that can run (hard)."""
    name = repr(spec.id) if spec.id else f"with SHA-256 {spec.sha256[:12]}..."
    entry, why = store_lookup(spec.sha256, "vae", brief=True) if spec.sha256 else (None, None)
    if entry is None and spec.id:
        entry, why = store_lookup(spec.id, "vae", brief=True)
        if entry is not None and spec.sha256 and entry.sha256() != spec.sha256:
            entry, why = None, (f"the store's {entry.path} has that id but not the recipe's SHA-256 "
                                f"{spec.sha256[:12]}...")
    fix = ("put the VAE file in a models folder (IGA_MODELS, or \"models\" in the config file: see `iga models "
           "--help`), or pass --vae PATH")
    if entry is not None:
        if not _vae_fits(r, entry, architecture):
            return None
        return _vae_file_identity(r, VaeIdentity(id=spec.id or entry.id, source="file"), Path(entry.path))
    if own_vae is False:
        r.hard("vae", f"the recipe's VAE {name} is a separate file (embedded: false), {why}, and the checkpoint has "
               "no VAE of its own", spec.id, None, fix)
        return None
    r.soft("vae", "vae", f"the recipe's VAE {name} is a separate file (embedded: false), and {why}; the model would "
           "run with the checkpoint's own VAE, and colours may shift", spec.id, "the checkpoint's own VAE", fix)
    return VaeIdentity(id=None, source="checkpoint")


def _store_vae_by_id(r: Resolver, vae_id: str, architecture: str) -> VaeIdentity:
    """A requested VAE id (not a path) from the store; unknown or ambiguous is hard (nothing to load)."""
    entry, why = store_lookup(vae_id, "vae")
    if entry is None:
        r.hard("vae", f"VAE {vae_id!r}: {why}", None, vae_id, "pass --vae PATH, or put the file in a models folder "
               "(`iga models --kind vae` lists the store)")
        return VaeIdentity(id=vae_id, source="file")
    if not _vae_fits(r, entry, architecture):
        return VaeIdentity(id=vae_id, source="file")
    return _vae_file_identity(r, VaeIdentity(id=entry.id, source="file"), Path(entry.path))


def _vae_fits(r: Resolver, entry: Any, architecture: str) -> bool:
    """A VAE decodes the latents of the families it was made for only (4 latent channels: SD1/2/XL; 16: SD3/Flux)."""
    if "unknown" in (architecture, entry.architecture) or architecture in entry.families():
        return True
    r.hard("vae", f"VAE {entry.id!r} ({entry.path}) is made for {entry.architecture} latents, not {architecture}'s",
           None, entry.id, "use a VAE made for this model family")
    return False


def _vae_file_identity(r: Resolver, ident: VaeIdentity, path: Path) -> VaeIdentity:
    """A VAE file (or diffusers VAE folder) is recorded by its hash (found again through the model store); its local
    path only with IGA_RECORD_MODEL_PATH=1, so shared images do not reveal local folders."""
    import os

    from iga.checkpoint.hashing import file_sha256, folder_weights_sha256
    from iga.guard.source import RECORD_PATH_ENV
    from iga.store.used import remember

    if path.is_dir() and (path / "config.json").is_file():
        digest = folder_weights_sha256(path)[0]  # a folder has no single file to hash: its weights' hash
    elif path.is_file():
        digest = file_sha256(path)
        remember(digest, str(path), ident.id or path.stem)
    else:
        r.hard("vae", f"VAE not found: {path}", None, str(path), "check the path")
        return ident
    recorded = str(path) if os.environ.get(RECORD_PATH_ENV) == "1" else None
    return ident.model_copy(update={"path": recorded, "file_sha256": digest, "autov2": digest[:10]})
