"""Safe save/load and scArches-style query mapping.

A saved model is a folder with ``model.json`` (class, init arguments, the AnnData
registry and feature names, all plain JSON) and ``weights.pt`` (a ``state_dict`` of
tensors only, read with ``torch.load(weights_only=True)``). Loading a model from a
stranger therefore cannot execute code. Works for any set-up (``batch_key`` or
purpose-specific keys) because the registry is stored as data and replayed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch
from anndata import AnnData

from regularizedvi import _constants as C
from regularizedvi.model._query import carry_query_mapping, copy_reference_weights

MODEL_FILE = "model.json"
WEIGHTS_FILE = "weights.pt"
ADATA_FILE = "adata.h5ad"
# 2: covariates enter each layer after its LayerNorm with COVARIATE_WEIGHT_GAIN, and a
# single-modality set-up's feature_scaling_covariate_keys=None means the nn-conditioning
# keys. 3: the background is a profile times an amount with a per-cell scale (the init
# arguments ambient_background / ambient_cell_scale / native_share_penalty). 4: the
# native-share penalty's power of depth (native_share_power, 0.5 before), and the
# multimodal model's primary modality (its decoder reads its own latent slice). 5: the
# multimodal model's other decoders read the primary slice detached, and its other slices'
# KL weighs secondary_kl_weight (detach_primary / secondary_kl_weight). Files of an earlier
# format load with the rules their weights were trained with.
FORMAT_VERSION = 5
# What the ambient arguments meant before format 3 (the spec's free background, no scale).
_BEFORE_FORMAT3 = {"ambient_background": "free", "ambient_cell_scale": False, "native_share_penalty": 0.0}
# Format 3's native-share penalty: 0.17 sqrt(N_n).
_BEFORE_FORMAT4 = {"native_share_power": 0.5}
# Optional model.json field of a single-modality query model (no format bump: its absence
# means none, as in every earlier file): {"scaling_rows": [...], "pinned_decoder_columns": [...]}.
QUERY_MAPPING_FIELD = "query_mapping"


def _query_mapping(model) -> dict | None:
    """A model's query-mapping state, or None: only a class whose ``supports_query_input_correction``
    is set keeps one (its module's ``query_mapping()``)."""
    return model.module.query_mapping() if getattr(type(model), "supports_query_input_correction", False) else None


def _module_format(module) -> int:
    """The file format a module's layers follow: 1 if they run format 1's covariate rule."""
    from regularizedvi.nn._layers import MLP

    legacy = any(isinstance(m, MLP) and m.covariates_before_norm for m in module.modules())
    return 1 if legacy else FORMAT_VERSION


def _format1_setup_args(description: dict, setup_args: dict) -> dict:
    """Format 1 single-modality files: ``feature_scaling_covariate_keys=None`` meant none."""
    if description.get("format", FORMAT_VERSION) < 2 and setup_args.get("feature_scaling_covariate_keys") is None:
        return {**setup_args, "feature_scaling_covariate_keys": []}
    return setup_args


def _to_json(obj):
    if isinstance(obj, dict):
        return {str(k): _to_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_to_json(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return {"__ndarray__": [_to_json(v) for v in obj.tolist()], "dtype": str(obj.dtype)}
    if isinstance(obj, np.generic):
        return obj.item()
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    return str(obj)


def _from_json(obj):
    if isinstance(obj, dict):
        if "__ndarray__" in obj:
            dtype = obj["dtype"]
            return np.asarray(obj["__ndarray__"], dtype=object if dtype == "object" else dtype)
        return {k: _from_json(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_from_json(v) for v in obj]
    return obj


_DESCRIPTION_KEYS = ("class", "init_kwargs", "registry", "var_names")


def read_model_description(dir_path: str | os.PathLike) -> dict:
    """The parsed ``model.json`` of a saved model folder; a clear ``ValueError`` naming the
    file when it is missing, damaged or not a regularizedvi model description."""
    path = Path(dir_path)
    file = path / MODEL_FILE
    if not file.exists():
        raise FileNotFoundError(f"No {MODEL_FILE} in '{path}': is this a folder written by model.save()?")
    try:
        description = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(
            f"'{file}' is damaged or not a regularizedvi model description (it is not valid JSON: "
            f"{err.__class__.__name__} at {getattr(err, 'pos', '?')}). Save the model again, or restore "
            "the folder from a copy."
        ) from None
    missing = [k for k in _DESCRIPTION_KEYS if not isinstance(description, dict) or k not in description]
    if missing:
        raise ValueError(f"'{file}' is not a regularizedvi model description: it lacks {missing}. "
                         "Is this a folder written by model.save()?")
    description["registry"] = _from_json(description["registry"])
    return description


def read_weights(dir_path: str | os.PathLike) -> dict:
    """The tensors of ``weights.pt``, read with ``torch.load(weights_only=True)``: a file that
    holds anything but tensors (a pickle with code) is refused, not run."""
    file = Path(dir_path) / WEIGHTS_FILE
    if not file.exists():
        raise FileNotFoundError(f"No {WEIGHTS_FILE} in '{Path(dir_path)}': the saved model is incomplete.")
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises RuntimeError / UnpicklingError / EOFError / ... here
        reason = str(err).splitlines()[0] if str(err) else err.__class__.__name__
        safe = "Weights only load failed" in str(err) or err.__class__.__name__ == "UnpicklingError"
        what = ("it holds objects other than tensors, which regularizedvi never writes and does not load"
                if safe else f"it cannot be read ({err.__class__.__name__}: {reason[:120]})")
        raise ValueError(
            f"'{file}' is damaged or not written by regularizedvi: {what}. Save the model again, or "
            "restore the folder from a copy."
        ) from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"'{file}' is not a regularizedvi weights file (expected a dict of tensors).")
    return state


def read_saved_model(dir_path: str | os.PathLike) -> tuple[dict, dict]:
    """Read ``(description, state_dict)`` from a saved model folder, executing no code."""
    return read_model_description(dir_path), read_weights(dir_path)


class SafeSaveLoadMixin:
    """``save``/``load``/``load_query_data`` without pickle."""

    # {format: init arguments a file of an earlier format was trained with, where absent}
    _earlier_init_kwargs = {3: _BEFORE_FORMAT3, 4: _BEFORE_FORMAT4}
    # Whether the model keeps query-mapping state: load_query_data's input correction applies,
    # its module has query_mapping() / set_query_mapping(), and model.json may hold
    # QUERY_MAPPING_FIELD (the single-modality model). The one switch for all of these.
    supports_query_input_correction = False

    def save(self, dir_path: str | os.PathLike, overwrite: bool = False, save_anndata: bool = False) -> None:
        """Write the model to ``dir_path`` (``model.json`` + ``weights.pt``; optional AnnData).

        ``save_anndata=True`` is refused for a backed AnnData (its data are in its file already).
        """
        path = Path(dir_path)
        if path.exists() and any(path.iterdir()) and not overwrite:
            raise FileExistsError(f"'{path}' exists and is not empty; pass overwrite=True to replace it.")
        if save_anndata and getattr(self.adata, "isbacked", False):
            raise ValueError(
                f"save_anndata=True would copy a backed (on-disk) AnnData, whose data already live in "
                f"'{self.adata.filename}'. Save the model without it (save_anndata=False) and load it with "
                "load(dir_path, adata=anndata.read_h5ad(path, backed='r'))."
            )
        path.mkdir(parents=True, exist_ok=True)
        from regularizedvi import __version__

        description = {
            "format": _module_format(self.module),
            "class": type(self).__name__,
            "regularizedvi_version": __version__,
            "init_kwargs": self._init_kwargs,
            "registry": _to_json(self.adata_manager.registry),
            "var_names": self._feature_names(self.adata),
            "is_trained": bool(self.is_trained_),
        }
        if (mapping := _query_mapping(self)) is not None:
            description[QUERY_MAPPING_FIELD] = mapping
        state = {k: v.detach().cpu() for k, v in self.module.state_dict().items()}
        torch.save(state, path / WEIGHTS_FILE)
        (path / MODEL_FILE).write_text(json.dumps(description, indent=1))
        if save_anndata:
            self._write_data(path)

    def _write_data(self, path: Path) -> None:
        """Write the registered data next to the model (``adata.h5ad``)."""
        self.adata.write_h5ad(path / ADATA_FILE)

    @staticmethod
    def _feature_names(adata) -> list[str]:
        """The feature names a saved model records and checks data against."""
        return [str(v) for v in adata.var_names]

    @classmethod
    def _check_description(cls, description: dict) -> None:
        if description.get("class") != cls.__name__:
            raise ValueError(
                f"The saved model is a {description.get('class')}, not a {cls.__name__}: "
                f"load it with regularizedvi.{description.get('class')}.load()."
            )

    @classmethod
    def _read_adata_for(cls, path: Path, adata: AnnData | None) -> AnnData:
        if adata is not None:
            return adata
        if (path / ADATA_FILE).exists():
            import anndata

            return anndata.read_h5ad(path / ADATA_FILE)
        raise ValueError(f"No AnnData given and none saved in '{path}': pass adata=.")

    @staticmethod
    def _check_features(var_names, saved: list[str], what: str) -> None:
        names = [str(v) for v in var_names]
        if names == saved:
            return
        missing = [g for g in saved if g not in set(names)]
        extra = [g for g in names if g not in set(saved)]
        if not missing and not extra:
            raise ValueError(f"{what} has the model's features in another order: use adata[:, saved_var_names].")
        raise ValueError(
            f"{what} does not have the model's features: {len(missing)} missing "
            f"(e.g. {missing[:5]}), {len(extra)} unknown (e.g. {extra[:5]}). Subset to the "
            "model's features and add missing ones as all-zero columns: "
            "regularizedvi.align_features(adata, saved_var_names) does both."
        )

    @classmethod
    def _rebuild(cls, description: dict, adata: AnnData, extend_categories: bool):
        registry = description["registry"]
        setup_args = _format1_setup_args(description, dict(registry["setup_args"]))
        labels_key = setup_args.get("labels_key")
        if labels_key is not None and labels_key not in adata.obs.columns:
            raise ValueError(
                f"The model was set up with labels_key={labels_key!r} (the ambient adversary's labels), but "
                f"the data have no obs column {labels_key!r}. Add it: the cells' labels or, for a query "
                f"without labels, one placeholder value (obs[{labels_key!r}] = 'unknown'; it becomes a new "
                "label of the query)."
            )
        cls.setup_anndata(adata, source_registry=registry, extend_categories=extend_categories, **setup_args)
        return cls(adata, **description["init_kwargs"])

    @classmethod
    def _rebuild_saved(cls, description: dict, adata, extend_categories: bool):
        """:meth:`_rebuild`, with the layer and background rules of the description's file format."""
        from regularizedvi.nn._layers import MLP

        saved_format = description.get("format", FORMAT_VERSION)
        for before, meaning in cls._earlier_init_kwargs.items():
            if saved_format < before:
                description = {**description, "init_kwargs": {**meaning, **description["init_kwargs"]}}
        model = cls._rebuild(description, adata, extend_categories)
        if description.get("format", FORMAT_VERSION) < 2:
            for layer in model.module.modules():
                if isinstance(layer, MLP):
                    layer.use_covariates_before_norm()
        return model

    @classmethod
    def load(cls, dir_path: str | os.PathLike, adata: AnnData | None = None, accelerator: str = "cpu",
             device: str | int = "auto"):
        """Load a model saved with :meth:`save`; ``adata`` must have the same features.

        The AnnData is registered with the saved set-up (the same categories; an unknown
        category is an error). Latents of the loaded model equal the saved model's bitwise.
        Files of an earlier model file format (``model.json``'s ``"format"``) load with the
        layer rules their weights were trained with, and keep them when saved again.
        """
        path = Path(dir_path)
        description, state = read_saved_model(path)
        cls._check_description(description)
        adata = cls._read_adata_for(path, adata)
        cls._check_features(cls._feature_names(adata), description["var_names"], "adata")
        try:
            model = cls._rebuild_saved(description, adata, extend_categories=False)
        except ValueError as error:
            if "categor" not in str(error):
                raise
            raise ValueError(
                f"adata has covariate categories the saved model never saw ({error}). To embed "
                "new batches or samples, map them with load_query_data(adata, model_dir) and train "
                "the query model."
            ) from error
        try:
            model.module.load_state_dict(state)
        except RuntimeError as err:
            raise ValueError(
                f"The weights in '{path / WEIGHTS_FILE}' do not fit the model described by its "
                f"{MODEL_FILE} ({str(err).splitlines()[0][:200]}): the folder is damaged or mixes two models."
            ) from None
        if cls.supports_query_input_correction:
            model.module.set_query_mapping(description.get(QUERY_MAPPING_FIELD))
        model.module.eval()
        model.is_trained_ = description["is_trained"]
        if accelerator != "cpu":
            model.to_device(device if device != "auto" else accelerator)
        return model

    @classmethod
    def load_query_data(cls, adata: AnnData, reference_model, freeze: bool = True,
                        input_correction: bool | None = None):
        """Map a query onto a trained reference (scArches-style architectural surgery).

        ``reference_model`` is a trained model or a folder written by :meth:`save`. The
        query is registered with the reference set-up; new categories (ambient,
        dispersion, library, decoder and encoder covariates) get new parameters
        initialised at their priors, while every reference weight is copied and, with
        ``freeze`` (default), kept fixed during ``train()``. Train the returned model on
        the query, then embed it.

        ``input_correction`` (single-modality :class:`AmbientRegularizedSCVI` only; used with
        ``freeze`` only; ``None``, the default, means ``QUERY_INPUT_CORRECTION`` = True there):
        when the query brings new feature-scaling categories,

        * the frozen z encoder reads a query cell's ``log1p(x / r)``, where ``log r`` is its
          category's learned ``log`` feature scaling minus the mean over the reference
          categories, centred over features (the library and ambient-scale encoders keep
          reading ``log1p(x)``). ``r = 1`` exactly for reference categories, so reference
          cells embedded by the query model keep the reference latent bit for bit;
        * the new decoder covariate columns start at the mean of the reference categories'
          columns and stay fixed (the query is decoded as an average reference batch; its
          technology shift is left to the feature scaling);
        * the new feature-scaling rows get a loose Gamma(2, 2) prior
          (``QUERY_FEATURE_SCALING_PRIOR``) instead of Gamma(200, 200).

        Measured (bench/mapping.py, README recipe with batch_key + nn conditioning, 3 seeds):
        query->reference kNN mixing 0.162 -> 0.204 on cellbench (scVI 0.208) and 0.616 ->
        0.619 on SNARE (scVI 0.646), label accuracy unchanged. ``False`` maps exactly as
        before. A saved query model keeps these settings (``model.json``).

        :class:`RegularizedMultimodalVI` has no input correction: it maps a query as the
        single-modality model does with ``input_correction=False``. Its default (``None``) and
        ``False`` map so; ``True`` is refused with a ``ValueError``.
        """
        if input_correction is not None and not isinstance(input_correction, bool):
            raise TypeError(f"input_correction must be True or False, got {input_correction!r}.")
        if input_correction is None:
            input_correction = C.QUERY_INPUT_CORRECTION and cls.supports_query_input_correction
        elif input_correction and not cls.supports_query_input_correction:
            raise ValueError(
                f"input_correction=True does not apply to {cls.__name__}: the multimodal model maps a "
                "query without the input correction (only the single-modality AmbientRegularizedSCVI "
                "has it). Leave input_correction at its default or pass False."
            )
        if isinstance(reference_model, (str, os.PathLike)):
            description, state = read_saved_model(reference_model)
        else:
            description = {
                "format": _module_format(reference_model.module),
                "class": type(reference_model).__name__,
                "init_kwargs": reference_model._init_kwargs,
                "registry": reference_model.adata_manager.registry,
                "var_names": reference_model._feature_names(reference_model.adata),
                QUERY_MAPPING_FIELD: _query_mapping(reference_model),
            }
            state = {k: v.detach().cpu() for k, v in reference_model.module.state_dict().items()}
        cls._check_description(description)
        cls._check_features(cls._feature_names(adata), description["var_names"], "The query")
        model = cls._rebuild_saved(description, adata, extend_categories=True)
        copy_reference_weights(model, description["registry"], state, freeze=freeze)
        if cls.supports_query_input_correction:
            carry_query_mapping(model, description["registry"], description.get(QUERY_MAPPING_FIELD),
                                correct=input_correction and freeze)
        model._frozen_reference = freeze
        # With no new category there is nothing to learn: the model is the trained reference.
        model.is_trained_ = freeze and not any(p.requires_grad for p in model.module.parameters())
        model.module.eval()
        return model


def load_model(dir_path: str | os.PathLike, adata=None, **kwargs):
    """Load a saved model whatever its class (``model.json`` says which): an
    :class:`AmbientRegularizedSCVI` for an AnnData, a :class:`RegularizedMultimodalVI` for a
    MuData. ``kwargs`` as in the class's ``load``."""
    from regularizedvi.model import AmbientRegularizedSCVI, RegularizedMultimodalVI

    classes = {c.__name__: c for c in (AmbientRegularizedSCVI, RegularizedMultimodalVI)}
    name = read_model_description(dir_path)["class"]
    if name not in classes:
        raise ValueError(f"'{Path(dir_path) / MODEL_FILE}' describes a {name!r}, not a regularizedvi model "
                         f"({', '.join(classes)}).")
    return classes[name].load(dir_path, adata, **kwargs)
