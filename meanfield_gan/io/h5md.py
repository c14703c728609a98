"""Run files in H5MD 1.1: writing trajectories and checkpoints, reading them back.

Layout of a file written by ``meanfield-gan run`` (H5MD 1.1, https://www.nongnu.org/h5md/)::

    /                               attrs: complete (0/1), error (last error message, or "")
    h5md/                           attrs: version = [1, 1]
        author/                     attrs: name
        creator/                    attrs: name = "meanfield_gan", version
    particles/
        generator/
            id        (N,)          particle index (dimension scale "id")
            coordinate (D,)         coordinate labels a[k], B[k,l], c[k] (dimension scale)
            box/                    attrs: dimension = D = K(L+2), boundary = ["none"] * D
            position/
                step  (T,)  int     time-dependent data element: one row per record
                time  (T,)  float   (dimension scale "time")
                value (T, N, D)     flattened generator particles (MODEL.md order)
        critic/
            id, coordinate          as above, D = K + 2 (alpha, beta[k], gamma)
            box/                    attrs: dimension, boundary; edges (D,) = 2 clip and
                                    offset (D,) = -clip: Q = offset + [0, edges] (neither
                                    without a box, clip = inf)
            position/{step, time, value (T, M, K+2)}
        reference_generator/, reference_critic/     (only with [reference] record_particles)
    observables/<name>/{step, time, value (T,)}     psi, critic_boundary_fraction, d2_squared, ...
    parameters/                     attrs: seeds, N, M, K, L, dt, gamma_c, backend, package
                                    version, git revision; datasets config_toml (as written) and
                                    config_canonical_toml (every default filled in)
    checkpoint/                     two slots, see below

Every axis of every dataset has an HDF5 dimension scale, so
``xarray.open_dataset(path, engine="h5netcdf", group="particles/critic/position")`` gives the
named dimensions ``(time, id, coordinate)``. Time-dependent datasets are chunked, compressed
(gzip + shuffle) and resizable along time; each record is appended and flushed.

Checkpoints. ``checkpoint/slot0`` and ``checkpoint/slot1`` each hold a full state (particles,
optimiser state, step, time and any extra states such as the reference run's) and an attribute
``valid``. A new checkpoint goes into the slot *not* holding the newest valid one: ``valid`` is
set to 0 and flushed, the arrays written and flushed, then ``valid = 1`` and the step are set and
flushed. A process killed mid-write therefore leaves the other slot's checkpoint intact; readers
take the valid slot with the largest step. The random state needs no storage: SGD batches of
step ``k`` depend only on ``(seed, k)`` (see :mod:`meanfield_gan.driver`), so the step and the
seed stored in ``parameters`` suffice to continue bitwise identically.
"""
from __future__ import annotations

import getpass
import math
import os
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import h5py
import numpy as np

from ..model.problem import State

if TYPE_CHECKING:  # xarray is optional: only Run.to_xarray needs it
    import xarray

__all__ = [
    "H5MD_VERSION",
    "H5MDWriter",
    "Run",
    "load",
    "read_checkpoint",
    "git_revision",
    "generator_labels",
    "critic_labels",
]

H5MD_VERSION = (1, 1)
CREATOR = "meanfield_gan"
_STR = h5py.string_dtype("utf-8")
_SLOTS = ("slot0", "slot1")
#: Target size of one chunk of a time-dependent particle dataset.
_CHUNK_BYTES = 1 << 20
_COMPRESSION = dict(compression="gzip", compression_opts=4, shuffle=True)


def _package_version() -> str:
    from .._version import __version__

    return __version__


def git_revision() -> str:
    """``git rev-parse HEAD`` of the package's checkout (``-dirty`` if modified) or "unknown"."""
    here = Path(__file__).resolve().parent
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True,
                             text=True, timeout=10)
        if rev.returncode != 0:
            return "unknown"
        out = rev.stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=10)
        if dirty.returncode == 0 and dirty.stdout.strip():
            out += "-dirty"
        return out or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def generator_labels(K: int, L: int) -> list[str]:
    """Names of the flattened generator coordinates, in MODEL.md order: ``a[k], B[k,l], c[k]``."""
    out = []
    for k in range(K):
        out.append(f"a[{k}]")
        out.extend(f"B[{k},{l}]" for l in range(L))
        out.append(f"c[{k}]")
    return out


def critic_labels(K: int) -> list[str]:
    """Names of the critic coordinates: ``alpha, beta[0..K-1], gamma``."""
    return ["alpha"] + [f"beta[{k}]" for k in range(K)] + ["gamma"]


def _author() -> str:
    try:
        return getpass.getuser()
    except Exception:  # getuser raises various errors when no user name is known
        return "unknown"


def _scale(group: h5py.Group, name: str, data: np.ndarray) -> h5py.Dataset:
    ds = group.create_dataset(name, data=data)
    ds.make_scale(name)
    return ds


def _attach(ds: h5py.Dataset, *scales: h5py.Dataset) -> None:
    for axis, s in enumerate(scales):
        ds.dims[axis].attach_scale(s)


def _create_element(parent: h5py.Group, name: str, row_shape: tuple[int, ...],
                    row_scales: Iterable[h5py.Dataset]) -> h5py.Group:
    """An empty H5MD time-dependent data element ``name/{step, time, value}``."""
    g = parent.create_group(name)
    row_bytes = 8 * int(np.prod(row_shape, dtype=np.int64))
    # One record per chunk along time: an append then never rewrites the (compressed) chunk of
    # an earlier record, so a run killed mid-append keeps every earlier record intact.
    ct = 1
    chunk_rows = row_shape
    if row_bytes > _CHUNK_BYTES * 64 and row_shape:  # huge rows: split along particles too
        chunk_rows = (max(1, (_CHUNK_BYTES * 64) // (row_bytes // row_shape[0])),) + row_shape[1:]
    t = g.create_dataset("time", shape=(0,), maxshape=(None,), dtype="f8", chunks=(1024,))
    t.make_scale("time")
    s = g.create_dataset("step", shape=(0,), maxshape=(None,), dtype="i8", chunks=(1024,))
    v = g.create_dataset("value", shape=(0,) + row_shape, maxshape=(None,) + row_shape,
                         dtype="f8", chunks=(ct,) + chunk_rows, **_COMPRESSION)
    _attach(s, t)
    _attach(v, t, *row_scales)
    return g


def _append(element: h5py.Group, step: int, time: float, value: Any) -> None:
    n = element["step"].shape[0]
    for name in ("step", "time", "value"):
        element[name].resize(n + 1, axis=0)
    element["step"][n] = step
    element["time"][n] = time
    element["value"][n] = value


def _elements(f: h5py.File) -> list[h5py.Group]:
    """Every time-dependent element (``particles/*/position`` and ``observables/*``)."""
    out = []
    for gname in ("particles", "observables"):
        if gname not in f:
            continue
        for g in f[gname].values():
            el = g["position"] if gname == "particles" and "position" in g else g
            if isinstance(el, h5py.Group) and {"step", "time", "value"} <= set(el.keys()):
                out.append(el)
    return out


@dataclass
class Checkpoint:
    """A checkpoint read back: the main state and any extra states (e.g. ``"reference"``)."""

    state: State
    extras: dict[str, State] = field(default_factory=dict)
    slot: str = ""


class H5MDWriter:
    """Writes a run file: records appended as they come, checkpoints in two slots.

    Create a new file with :meth:`create`, reopen one to continue with :meth:`open`; use as a
    context manager (the file is closed, not marked complete, on exit). ``record`` has the
    signature :func:`meanfield_gan.simulate` expects of a recorder.
    """

    def __init__(self, f: h5py.File):
        self.f = f
        p = f["parameters"].attrs
        self.K, self.L, self.N, self.M = (int(p[k]) for k in ("K", "L", "N", "M"))

    # ------------------------------------------------------------------------------------
    @classmethod
    def create(cls, path: str | os.PathLike, *, K: int, L: int, N: int, M: int, clip: float,
               config_text: str, config_canonical: str, parameters: Mapping[str, Any] | None = None,
               reference_particles: bool = False, author: str | None = None) -> H5MDWriter:
        """Create a new run file (``path`` must not exist).

        Parameters
        ----------
        path : path-like
        K, L, N, M : int
            Dimensions and particle numbers.
        clip : float
            Half-width of the critic's box (written as the critic ``box``).
        config_text, config_canonical : str
            The configuration as written and in canonical form.
        parameters : mapping, optional
            Further scalar attributes of ``parameters/`` (seeds, dt, backend, ...).
        reference_particles : bool
            Also create ``particles/reference_generator`` and ``particles/reference_critic``.
        author : str, optional
            ``h5md/author`` name (default: the user name).
        """
        f = h5py.File(path, "w-")
        try:
            f.attrs["complete"] = np.int8(0)
            f.attrs["error"] = ""
            h = f.create_group("h5md")
            h.attrs["version"] = np.array(H5MD_VERSION, dtype=np.int32)
            h.create_group("author").attrs["name"] = author or _author()
            cr = h.create_group("creator")
            cr.attrs["name"] = CREATOR
            cr.attrs["version"] = _package_version()

            par = f.create_group("parameters")
            for k, v in dict(K=K, L=L, N=N, M=M, clip=float(clip),
                             package_version=_package_version(),
                             git_revision=git_revision(), **dict(parameters or {})).items():
                par.attrs[k] = v
            par.create_dataset("config_toml", data=config_text, dtype=_STR)
            par.create_dataset("config_canonical_toml", data=config_canonical, dtype=_STR)

            parts = f.create_group("particles")
            groups = [("generator", N, generator_labels(K, L), None),
                      ("critic", M, critic_labels(K), float(clip))]
            if reference_particles:
                groups += [("reference_generator", N, generator_labels(K, L), None),
                           ("reference_critic", M, critic_labels(K), float(clip))]
            for name, n, labels, box_clip in groups:
                g = parts.create_group(name)
                pid = _scale(g, "id", np.arange(n, dtype=np.int64))
                coord = _scale(g, "coordinate", np.array(labels, dtype=object).astype(_STR))
                box = g.create_group("box")
                box.attrs["dimension"] = np.int32(len(labels))
                box.attrs["boundary"] = np.array(["none"] * len(labels), dtype=_STR)
                if box_clip is not None and math.isfinite(box_clip):
                    # Q = [-clip, clip]^D: the box has edges 2 clip and starts at -clip.
                    # Without a box (clip = inf) H5MD lets edges be omitted (every boundary
                    # is "none"); infinite edges would only mislead a reader.
                    e = box.create_dataset("edges", data=np.full(len(labels), 2.0 * box_clip))
                    o = box.create_dataset("offset", data=np.full(len(labels), -box_clip))
                    _attach(e, coord)
                    _attach(o, coord)
                    box.attrs["description"] = ("critic box Q = [-clip, clip]^(K+2) = offset + "
                                                "[0, edges]")
                _create_element(g, "position", (n, len(labels)), (pid, coord))
            f.create_group("observables")

            ck = f.create_group("checkpoint")
            ck.attrs["latest"] = ""
            _scale(ck, "generator_id", np.arange(N, dtype=np.int64))
            _scale(ck, "generator_coordinate",
                   np.array(generator_labels(K, L), dtype=object).astype(_STR))
            _scale(ck, "critic_id", np.arange(M, dtype=np.int64))
            _scale(ck, "critic_coordinate", np.array(critic_labels(K), dtype=object).astype(_STR))
            f.flush()
        except BaseException:
            f.close()
            raise
        return cls(f)

    @classmethod
    def open(cls, path: str | os.PathLike) -> H5MDWriter:
        """Reopen an existing run file for appending (to resume it)."""
        f = h5py.File(path, "r+")
        try:
            _check_run_file(f, path)
            return cls(f)
        except BaseException:
            f.close()
            raise

    def close(self) -> None:
        if self.f.id.valid:
            self.f.close()

    def __enter__(self) -> H5MDWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------------------------
    def append_particles(self, group: str, step: int, time: float, particles: np.ndarray) -> None:
        """Append one snapshot ``(n, ...)`` (flattened per particle) to ``particles/<group>``."""
        p = np.asarray(particles)
        _append(self.f["particles"][group]["position"], step, time, p.reshape(p.shape[0], -1))

    def append_observable(self, name: str, step: int, time: float, value: float) -> None:
        """Append a scalar to ``observables/<name>`` (created on first use)."""
        obs = self.f["observables"]
        if name not in obs:
            g = obs.create_group(name)
            t = g.create_dataset("time", shape=(0,), maxshape=(None,), dtype="f8", chunks=(1024,))
            t.make_scale("time")
            s = g.create_dataset("step", shape=(0,), maxshape=(None,), dtype="i8", chunks=(1024,))
            # Uncompressed: an append writes its element in place instead of re-compressing
            # (and relocating) a chunk that holds earlier values (kill safety).
            v = g.create_dataset("value", shape=(0,), maxshape=(None,), dtype="f8", chunks=(1024,))
            _attach(s, t)
            _attach(v, t)
        _append(obs[name], step, time, float(value))

    def record(self, step: int, time: float, theta: np.ndarray, omega: np.ndarray,
               observables: Mapping[str, float]) -> None:
        """Append a snapshot of both networks and the observables, then flush."""
        self.append_particles("generator", step, time, theta)
        self.append_particles("critic", step, time, omega)
        for k, v in observables.items():
            self.append_observable(k, step, time, v)
        self.f.flush()

    # ------------------------------------------------------------------------------------
    def _dims_for(self, shape: tuple[int, ...]) -> tuple[tuple[int, int], tuple[str, str]] | None:
        """Flattened shape and dimension scales of a generator- or critic-shaped array."""
        if shape == (self.N, self.K, self.L + 2):
            return (self.N, self.K * (self.L + 2)), ("generator_id", "generator_coordinate")
        if shape == (self.M, self.K + 2):
            return (self.M, self.K + 2), ("critic_id", "critic_coordinate")
        return None

    def _put(self, g: h5py.Group, name: str, arr: np.ndarray) -> None:
        arr = np.asarray(arr, dtype=np.float64)
        spec = self._dims_for(arr.shape)
        data = arr.reshape(spec[0]) if spec else arr
        if name in g and g[name].shape == data.shape:
            g[name][...] = data  # in place: the slot is marked invalid while this happens
        else:
            if name in g:
                del g[name]
            ds = g.create_dataset(name, data=data)
            if spec:
                ck = self.f["checkpoint"]
                _attach(ds, *(ck[s] for s in spec[1]))
        g[name].attrs["shape"] = np.array(arr.shape, dtype=np.int64)

    def _put_state(self, g: h5py.Group, state: State) -> None:
        self._put(g, "theta", state.theta)
        self._put(g, "omega", state.omega)
        opt = g.require_group("opt")
        for k in list(opt.keys()):
            if k not in state.opt:
                del opt[k]
        for k, v in state.opt.items():
            self._put(opt, k, v)
        g.attrs["step"] = np.int64(state.step)
        g.attrs["time"] = float(state.time)

    def write_checkpoint(self, state: State, extras: Mapping[str, State] | None = None) -> str:
        """Store ``state`` (and ``extras``, e.g. the reference run's state); return the slot used.

        The slot not holding the newest valid checkpoint is overwritten, so a crash while
        writing leaves the newest one readable.
        """
        ck = self.f["checkpoint"]
        newest = _newest_slot(ck)
        target = _SLOTS[1] if newest == _SLOTS[0] else _SLOTS[0]
        slot = ck.require_group(target)
        slot.attrs["valid"] = np.int8(0)
        self.f.flush()
        self._put_state(slot, state)
        ex = slot.require_group("extras")
        for k in list(ex.keys()):
            if k not in (extras or {}):
                del ex[k]
        for k, st in (extras or {}).items():
            self._put_state(ex.require_group(k), st)
        self.f.flush()
        slot.attrs["valid"] = np.int8(1)
        ck.attrs["latest"] = target
        self.f.flush()
        return target

    def read_checkpoint(self) -> Checkpoint | None:
        """The newest valid checkpoint, or ``None``."""
        return _read_checkpoint(self.f)

    def truncate(self, last_step: int) -> int:
        """Drop every record with ``step > last_step``; return the number of records kept."""
        for el in _elements(self.f):
            # records are appended in step order, so the kept ones are a prefix
            n = int(np.searchsorted(el["step"][...], last_step, side="right"))
            for name in ("step", "time", "value"):
                el[name].resize(n, axis=0)
        self.f.flush()
        return len(self.recorded_steps())

    def recorded_steps(self) -> np.ndarray:
        """Steps recorded so far (those of ``particles/generator/position``)."""
        return self.f["particles/generator/position/step"][...]

    def set_status(self, complete: bool, error: str = "") -> None:
        """Set the root attributes ``complete`` (0/1) and ``error``, and flush."""
        self.f.attrs["complete"] = np.int8(1 if complete else 0)
        self.f.attrs["error"] = error
        self.f.flush()


def _newest_slot(ck: h5py.Group) -> str | None:
    best, best_step = None, -1
    for s in _SLOTS:
        if s in ck and int(ck[s].attrs.get("valid", 0)) == 1:
            st = int(ck[s].attrs["step"])
            if st > best_step:
                best, best_step = s, st
    return best


def _get_state(g: h5py.Group) -> State:
    def arr(ds):
        return np.ascontiguousarray(ds[...].reshape(tuple(ds.attrs["shape"])))

    opt = {k: arr(v) for k, v in g["opt"].items()} if "opt" in g else {}
    return State(arr(g["theta"]), arr(g["omega"]), int(g.attrs["step"]), float(g.attrs["time"]),
                 opt)


def _read_checkpoint(f: h5py.File) -> Checkpoint | None:
    if "checkpoint" not in f:
        return None
    ck = f["checkpoint"]
    s = _newest_slot(ck)
    if s is None:
        return None
    slot = ck[s]
    extras = {k: _get_state(v) for k, v in slot["extras"].items()} if "extras" in slot else {}
    return Checkpoint(_get_state(slot), extras, s)


def _check_run_file(f: h5py.File, path: Any) -> None:
    try:
        name = f["h5md/creator"].attrs["name"]
    except KeyError:
        raise ValueError(f"{path} is not a meanfield_gan run file (no h5md/creator)") from None
    if isinstance(name, bytes):
        name = name.decode()
    if name != CREATOR or "parameters" not in f:
        raise ValueError(f"{path} was not written by meanfield_gan (creator {name!r})")


def _str(x: Any) -> str:
    if isinstance(x, bytes):
        return x.decode("utf-8")
    if isinstance(x, np.ndarray) and x.shape == ():
        return _str(x[()])
    return str(x)


def _attr_value(v: Any) -> Any:
    if isinstance(v, bytes):
        return v.decode("utf-8")
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, np.generic):
        return v.item()
    return v


def read_config_text(f: h5py.File, canonical: bool = True) -> str:
    """The configuration stored in an open run file (canonical form by default)."""
    return _str(f["parameters"]["config_canonical_toml" if canonical else "config_toml"][()])


def read_checkpoint(path: str | os.PathLike) -> Checkpoint | None:
    """The newest valid checkpoint of a run file (``None`` if it has none)."""
    with h5py.File(path, "r") as f:
        _check_run_file(f, path)
        return _read_checkpoint(f)


# ------------------------------------------------------------------------------------------
# reading a run back
# ------------------------------------------------------------------------------------------
@dataclass
class Run:
    """A run read back from a file by :func:`load`.

    Attributes
    ----------
    path : str
    times, steps : ndarray, shape (T,)
        Record times and steps.
    theta : ndarray, shape (T, N, K, L+2) or None
        Generator particles at each record (``None`` when loaded with ``particles=False``).
    omega : ndarray, shape (T, M, K+2) or None
        Critic particles.
    config : dict
        The full configuration (canonical: every default filled in), parsed from the stored TOML.
    config_text : str
        The configuration as the user wrote it.
    observables : dict of str -> ndarray (T,)
        ``psi``, ``critic_boundary_fraction`` and, with a reference run, ``d2_squared`` and
        ``coupling_squared``.
    complete : bool
        Whether the run reached ``t_end``.
    error : str
        The error that stopped the run (e.g. non-finite particles), or ``""``.
    parameters : dict
        The attributes of ``parameters/`` (seeds, sizes, dt, gamma_c, backend, versions).
    checkpoint : Checkpoint or None
        The newest valid checkpoint (full state: particles, optimiser state, step, time).
    reference_theta, reference_omega : ndarray or None
        Reference particles when the run stored them.
    config_canonical_text : str
        The canonical configuration as stored (the TOML text :attr:`config` was parsed from).
    """

    path: str
    times: np.ndarray
    steps: np.ndarray
    theta: np.ndarray | None
    omega: np.ndarray | None
    config: dict
    config_text: str
    observables: dict[str, np.ndarray]
    complete: bool
    error: str
    parameters: dict[str, Any]
    checkpoint: Checkpoint | None = None
    reference_theta: np.ndarray | None = None
    reference_omega: np.ndarray | None = None
    config_canonical_text: str = ""

    @property
    def N(self) -> int:
        return int(self.parameters["N"])

    @property
    def M(self) -> int:
        return int(self.parameters["M"])

    @property
    def K(self) -> int:
        return int(self.parameters["K"])

    @property
    def L(self) -> int:
        return int(self.parameters["L"])

    def state(self, index: int = -1) -> State:
        """The particles of record ``index`` as a :class:`State` (no optimiser state)."""
        if self.theta is None or self.omega is None:
            raise ValueError("index: particles were not loaded (load(..., particles=True))")
        return State(self.theta[index].copy(), self.omega[index].copy(),
                     int(self.steps[index]), float(self.times[index]))

    def to_xarray(self) -> xarray.Dataset:
        """The run as an :class:`xarray.Dataset` with named dimensions (needs xarray).

        Returns
        -------
        xarray.Dataset
            Dimensions ``time``, ``generator`` (particle), ``k`` (data coordinate),
            ``generator_parameter`` (``a``, ``b[0]`` ... ``b[L-1]``, ``c``), ``critic``
            (particle) and ``critic_parameter`` (``alpha``, ``beta[0]`` ... ``gamma``).
            Variables: ``theta (time, generator, k, generator_parameter)`` and
            ``omega (time, critic, critic_parameter)`` (when the particles were loaded),
            ``reference_theta``/``reference_omega`` when the run stored them, and one
            variable per observable on ``time``. Coordinates ``time`` and ``step``. The
            attributes hold the configuration (``config_toml``, canonical: every default
            filled in; ``tomllib.loads`` gives :attr:`config`), the ``parameters/``
            attributes, ``complete`` (0/1), ``error`` and ``path``; all of them can be
            written to netCDF.

        Raises
        ------
        ImportError
            When xarray is not installed.
        """
        try:
            import xarray as xr
        except ImportError:
            raise ImportError("Run.to_xarray needs xarray, an optional dependency: "
                              "pip install xarray") from None
        K, L = self.K, self.L
        gen_dims = ("time", "generator", "k", "generator_parameter")
        crit_dims = ("time", "critic", "critic_parameter")
        data: dict[str, Any] = {}
        for name, arr, dims in (("theta", self.theta, gen_dims),
                                ("omega", self.omega, crit_dims),
                                ("reference_theta", self.reference_theta, gen_dims),
                                ("reference_omega", self.reference_omega, crit_dims)):
            if arr is not None:
                data[name] = (dims, arr)
        for name, arr in self.observables.items():
            arr = np.asarray(arr)
            data[name] = (("time",) + tuple(f"{name}_dim{i}" for i in range(1, arr.ndim)), arr)
        coords = {
            "time": ("time", self.times, {"long_name": "time of the record"}),
            "step": ("time", self.steps, {"long_name": "step index of the record"}),
            "generator": np.arange(self.N),
            "k": ("k", np.arange(K), {"long_name": "data coordinate (row k of theta)"}),
            "generator_parameter": ["a"] + [f"b[{l}]" for l in range(L)] + ["c"],
            "critic": np.arange(self.M),
            "critic_parameter": critic_labels(K),
        }
        attrs: dict[str, Any] = {f"parameters.{k}": v for k, v in self.parameters.items()
                                 if isinstance(v, (str, int, float, list))}
        attrs.update(config_toml=self.config_canonical_text,
                     config_toml_as_written=self.config_text, complete=np.int8(self.complete),
                     error=self.error, path=self.path)
        return xr.Dataset(data, coords=coords, attrs=attrs)

    def __repr__(self) -> str:
        return (f"Run({self.path!r}, T={len(self.times)}, N={self.N}, M={self.M}, K={self.K}, "
                f"L={self.L}, complete={self.complete}, observables={sorted(self.observables)})")


def load(path: str | os.PathLike, particles: bool = True) -> Run:
    """Read a run file written by ``meanfield-gan run``.

    Parameters
    ----------
    path : str or path-like
    particles : bool
        Read the particle trajectories (``False``: only times, observables and metadata).

    Returns
    -------
    Run
        ``run.times (T,)``, ``run.theta (T, N, K, L+2)``, ``run.omega (T, M, K+2)``,
        ``run.config`` (dict), ``run.observables`` (dict of name -> (T,) arrays), plus
        ``run.steps``, ``run.complete`` and the newest checkpoint.
    """
    from .config import _toml

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"path: no such file: {path}")
    with h5py.File(path, "r") as f:
        _check_run_file(f, path)
        params = {k: _attr_value(v) for k, v in f["parameters"].attrs.items()}
        K, L, N, M = (int(params[k]) for k in ("K", "L", "N", "M"))
        gen = f["particles/generator/position"]
        # a run killed in the middle of a record may have one element longer than the others
        T = min(el["step"].shape[0] for el in _elements(f))
        times = gen["time"][:T]
        steps = gen["step"][:T]

        def read(group: str, shape: tuple[int, ...]) -> np.ndarray | None:
            if not particles or f"particles/{group}" not in f:
                return None
            return f[f"particles/{group}/position/value"][:T].reshape((-1,) + shape)

        theta = read("generator", (N, K, L + 2))
        omega = read("critic", (M, K + 2))
        rtheta = read("reference_generator", (N, K, L + 2))
        romega = read("reference_critic", (M, K + 2))
        obs = {name: g["value"][:T] for name, g in f["observables"].items()}
        canonical = read_config_text(f, True)
        text = read_config_text(f, False)
        run = Run(path=path, times=times, steps=steps, theta=theta, omega=omega,
                  config=_toml.loads(canonical), config_text=text, observables=obs,
                  complete=bool(int(f.attrs.get("complete", 0))),
                  error=_str(f.attrs.get("error", "")), parameters=params,
                  checkpoint=_read_checkpoint(f), reference_theta=rtheta, reference_omega=romega,
                  config_canonical_text=canonical)
    return run
