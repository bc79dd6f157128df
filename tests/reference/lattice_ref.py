"""Reference permutohedral-lattice filter (docs/design.md#permutohedral-lattice), pure numpy.

This follows Philipp Krähenbühl's dense-CRF ``Permutohedral`` class step by step, in float32
where that code works in float32, vectorised over points with numpy:

    embed   elevate each feature vector onto the hyperplane of Z^{d+1}, find the nearest
            remainder-0 lattice point, rank the coordinates, compute barycentric weights and
            the d+1 enclosing simplex vertices (keys = first d lattice coordinates);
    splat   vertex value = sum over (point, weight) of weight * value, in increasing point order;
    blur    for each lattice axis j in 0..d (d..0 when reverse): new = old + 0.5 (n1 + n2)
            with n1/n2 the two neighbours along that axis (missing neighbours are zero);
    slice   out_p = sum_r (w_r * vertex_r) * alpha, alpha = 1 / (1 + 2^-d).

Two variants of Krähenbühl's code exist and both are reproduced:

* ``emulate_sse=False`` (default): the portable code path, which the rrm C++ op implements:
  nearest remainder-0 point via ceil/floor comparison (ties go down), the coordinate sum kept
  in an ``int`` with float truncation, the barycentric wrap-around ``b0 += 1.0 + b[d+1]`` in
  double, slice ``(w * v) * alpha``.
* ``emulate_sse=True``: what pydensecrf actually executes on x86-64 (``__SSE__`` is always
  defined there): round-half-to-even rounding, float wrap-around, points padded with
  zero-feature points to a multiple of 4 (they insert extra, zero-valued lattice vertices!),
  and, for more than 2 value channels, slice weights premultiplied by alpha.

Apart from the padding points the two differ only at rounding level and in rare tie cases. The
padding points' vertices change the filter whenever the point count is not a multiple of 4 and
some of the image's vertices neighbour theirs (0.9% on coffee at 37 x 45): the rrm CRF op
builds its lattices with them for that reason (csrc/crf/crf_common.cpp, build_crf_lattice).

Values may be float32 (all splat/blur/slice arithmetic in float32, as in the original) or
float64 (same algorithm, same float32 embedding, arithmetic in float64 -- useful for
finite-difference checks, where the filter must be an exactly linear operator).
"""

from __future__ import annotations

import numpy as np

F32 = np.float32


# --------------------------------------------------------------------------- embedding


def _scale_factors(d: int) -> np.ndarray:
    """Diagonal of the elevation matrix E, float32 [d].

    The original stores ``inv_std_dev = sqrt(2/3) (d+1)`` in a float before multiplying in
    double, so the float rounding of that constant is reproduced here.
    """
    inv_std_dev = np.float64(F32(np.sqrt(2.0 / 3.0) * (d + 1)))
    i = np.arange(d, dtype=np.float64)
    return (1.0 / np.sqrt((i + 2.0) * (i + 1.0)) * inv_std_dev).astype(F32)


def _elevate(features: np.ndarray) -> np.ndarray:
    """Elevate features [P, d] float32 onto the hyperplane sum = 0 of R^{d+1}: [P, d+1] float32."""
    n_points, d = features.shape
    scale = _scale_factors(d)
    elevated = np.empty((n_points, d + 1), F32)
    running = np.zeros(n_points, F32)  # the original's `sm`
    for j in range(d, 0, -1):
        cf = features[:, j - 1] * scale[j - 1]
        elevated[:, j] = running - F32(j) * cf
        running = running + cf
    elevated[:, 0] = running
    return elevated


def _nearest_zero_point_portable(elevated: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Closest remainder-0 point, portable code path.

    Returns rem0 int64 [P, d+1] (multiples of d+1) and the coordinate sum int64 [P]
    (sum of rem0 / (d+1)).
    """
    d1 = elevated.shape[1]
    down_factor = F32(1.0) / F32(d1)
    v = down_factor * elevated
    up = np.ceil(v) * F32(d1)
    down = np.floor(v) * F32(d1)
    # A tie (point exactly half-way) goes down, as `up - e < e - down` is false.
    rem0 = np.where(up - elevated < elevated - down, up, down).astype(np.int64)
    # `int sum; sum += rd2 * down_factor;` -- float addition, then truncation to int.
    total = np.zeros(elevated.shape[0], np.int64)
    for i in range(d1):
        step = rem0[:, i].astype(F32) * down_factor
        total = np.trunc(total.astype(F32) + step).astype(np.int64)
    return rem0, total


def _nearest_zero_point_sse(elevated: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Closest remainder-0 point, SSE code path (round half to even, exact float sum)."""
    d1 = elevated.shape[1]
    v = np.rint((F32(1.0) / F32(d1)) * elevated)  # _mm_round_ps(NEAREST) == rint
    rem0 = (v * F32(d1)).astype(np.int64)
    return rem0, v.astype(np.int64).sum(axis=1)


def _rank(elevated: np.ndarray, rem0: np.ndarray) -> np.ndarray:
    """Position of each coordinate of (elevated - rem0) in descending order: int64 [P, d+1].

    Same pairwise comparison as the original, so ties resolve identically (lower index
    ranks after the higher one on equality).
    """
    diff = elevated - rem0.astype(F32)
    d1 = elevated.shape[1]
    rank = np.zeros(elevated.shape, np.int64)
    for i in range(d1 - 1):
        for j in range(i + 1, d1):
            less = diff[:, i] < diff[:, j]
            rank[:, i] += less
            rank[:, j] += ~less
    return rank


def _wrap_onto_plane(rank: np.ndarray, rem0: np.ndarray, total: np.ndarray) -> None:
    """Shift ranks by the coordinate sum and bring points back to the plane (in place)."""
    d1 = rank.shape[1]
    rank += total[:, None]
    below = rank < 0
    above = rank > d1 - 1
    rank[below] += d1
    rem0[below] += d1
    rank[above] -= d1
    rem0[above] -= d1


def _barycentric(
    elevated: np.ndarray, rem0: np.ndarray, rank: np.ndarray, emulate_sse: bool
) -> np.ndarray:
    """Barycentric weights float32 [P, d+1], accumulated in the original's order."""
    n_points, d1 = elevated.shape
    d = d1 - 1
    rows = np.arange(n_points)
    bary = np.zeros((n_points, d1 + 1), F32)
    v = (elevated - rem0.astype(F32)) * (F32(1.0) / F32(d1))
    for i in range(d1):
        pos = d - rank[:, i]
        bary[rows, pos] += v[:, i]
        bary[rows, pos + 1] -= v[:, i]
    if emulate_sse:  # `b[0] += 1 + b[d+1]` with an int 1: float arithmetic
        bary[:, 0] = bary[:, 0] + (F32(1.0) + bary[:, d1])
    else:  # `b[0] += 1.0 + b[d+1]` with a double 1.0: double arithmetic, one rounding
        wrapped = bary[:, 0].astype(np.float64) + (1.0 + bary[:, d1].astype(np.float64))
        bary[:, 0] = wrapped.astype(F32)
    return bary[:, :d1]


def _canonical_simplex(d: int) -> np.ndarray:
    """canonical[r][k] = r if k <= d - r else r - (d+1): int64 [d+1, d+1]."""
    r = np.arange(d + 1)[:, None]
    k = np.arange(d + 1)[None, :]
    return np.where(k <= d - r, r, r - (d + 1))


def _simplex_keys(rem0: np.ndarray, rank: np.ndarray) -> np.ndarray:
    """Keys (first d lattice coordinates) of each point's d+1 vertices: int64 [P, d+1, d]."""
    d = rank.shape[1] - 1
    canonical = _canonical_simplex(d)
    remainder = np.arange(d + 1)[None, :, None]
    return rem0[:, None, :d] + canonical[remainder, rank[:, None, :d]]


# --------------------------------------------------------------------------- key lookup


def _find_rows(table: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """Index of each query row in table (rows unique), or -1: int64 [Q].

    Done by sorting the union of both row sets, so it works for any key range / dimension.
    """
    if len(table) == 0 or len(queries) == 0:
        return np.full(len(queries), -1, np.int64)
    both = np.concatenate([table, queries], axis=0)
    _, inverse = np.unique(both, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    slot = np.full(inverse.max() + 1, -1, np.int64)
    slot[inverse[: len(table)]] = np.arange(len(table))
    return slot[inverse[len(table) :]]


def _blur_neighbours(keys: np.ndarray) -> np.ndarray:
    """Neighbour vertex indices along each lattice axis: int64 [d+1, 2, M], -1 if absent.

    Along axis j the neighbours of key k are k - 1 and k + 1 in every coordinate, except
    coordinate j which moves by +d / -d. For j = d no stored coordinate is excepted (the
    keys hold only the first d coordinates of the d+1).
    """
    n_vertices, d = keys.shape
    queries = np.empty((d + 1, 2, n_vertices, d), np.int64)
    for j in range(d + 1):
        queries[j, 0] = keys - 1
        queries[j, 1] = keys + 1
        if j < d:
            queries[j, 0, :, j] = keys[:, j] + d
            queries[j, 1, :, j] = keys[:, j] - d
    found = _find_rows(keys, queries.reshape(-1, d))
    return found.reshape(d + 1, 2, n_vertices)


# --------------------------------------------------------------------------- lattice


class LatticeRef:
    """A permutohedral lattice over one point set, reusable for many filter calls.

    Args:
        features: [P, d] (cast to float32), already divided by their standard deviations.
        emulate_sse: reproduce pydensecrf's x86 SSE code path instead of the portable one
            (see the module docstring).

    Attributes:
        offsets: int64 [P, d+1] vertex index of each point's simplex vertices.
        weights: float32 [P, d+1] barycentric weights (sum to 1 per point).
        keys: int64 [M, d] lattice coordinates of the vertices.
        neighbours: int64 [d+1, 2, M] blur neighbours per axis (-1 if absent).
    """

    def __init__(self, features: np.ndarray, emulate_sse: bool = False) -> None:
        feats = np.ascontiguousarray(features, dtype=F32)
        if feats.ndim != 2 or feats.shape[1] < 1:
            raise ValueError(f"features must be [P, d] with d >= 1, got {feats.shape}")
        self.n_points, self.dim = feats.shape
        self.emulate_sse = emulate_sse
        if emulate_sse:  # SSE init processes blocks of 4 points, padding with zero features
            pad = (-self.n_points) % 4
            feats = np.concatenate([feats, np.zeros((pad, self.dim), F32)])
        elevated = _elevate(feats)
        if emulate_sse:
            rem0, total = _nearest_zero_point_sse(elevated)
        else:
            rem0, total = _nearest_zero_point_portable(elevated)
        rank = _rank(elevated, rem0)
        _wrap_onto_plane(rank, rem0, total)
        self.weights = _barycentric(elevated, rem0, rank, emulate_sse)
        keys = _simplex_keys(rem0, rank).reshape(-1, self.dim)
        self.keys, inverse = np.unique(keys, axis=0, return_inverse=True)
        self.offsets = inverse.reshape(len(feats), self.dim + 1)
        self.neighbours = _blur_neighbours(self.keys)
        self._norm: dict[type, np.ndarray] = {}

    @property
    def n_vertices(self) -> int:
        return len(self.keys)

    def filter(self, values: np.ndarray, reverse: bool = False) -> np.ndarray:
        """Permutohedral filter of values [P, C] (or [P]) -> same shape.

        float64 values are processed in float64, anything else in float32.
        ``reverse=True`` blurs the axes in order d..0, which is the transpose of the filter.
        """
        vals = np.asarray(values)
        dtype = np.float64 if vals.dtype == np.float64 else F32
        flat = vals.ndim == 1
        vals = (vals[:, None] if flat else vals).astype(dtype)
        if vals.ndim != 2 or len(vals) != self.n_points:
            raise ValueError(f"values must be [{self.n_points}, C], got {np.shape(values)}")
        pad = len(self.offsets) - self.n_points
        vals = np.concatenate([vals, np.zeros((pad, vals.shape[1]), dtype)])
        grid = self._splat(vals)
        grid = self._blur(grid, reverse)
        out = self._slice(grid)[: self.n_points]
        return out.reshape(-1) if flat else out

    def _splat(self, vals: np.ndarray) -> np.ndarray:
        """Vertex values [M+1, C]; row M is the always-zero 'missing neighbour'."""
        channels = vals.shape[1]
        grid = np.zeros((self.n_vertices + 1, channels), vals.dtype)
        contrib = self.weights.astype(vals.dtype)[:, :, None] * vals[:, None, :]
        # np.add.at is unbuffered and walks the indices in order: (point, remainder)
        # row-major, so every vertex sums its contributions in increasing point order.
        np.add.at(grid, self.offsets.reshape(-1), contrib.reshape(-1, channels))
        return grid

    def _blur(self, grid: np.ndarray, reverse: bool) -> np.ndarray:
        """One full (not in-place) sweep per lattice axis with weights (1/2, 1, 1/2)."""
        half = grid.dtype.type(0.5)
        neighbours = np.where(self.neighbours < 0, self.n_vertices, self.neighbours)
        axes = range(self.dim, -1, -1) if reverse else range(self.dim + 1)
        for j in axes:
            new = np.zeros_like(grid)
            new[:-1] = grid[:-1] + half * (grid[neighbours[j, 0]] + grid[neighbours[j, 1]])
            grid = new
        return grid

    def _slice(self, grid: np.ndarray) -> np.ndarray:
        """out_p = sum_r (w_pr * grid[vertex_pr]) * alpha, accumulated over r in order."""
        dtype = grid.dtype.type
        alpha = dtype(F32(1.0) / (F32(1.0) + np.power(F32(2.0), F32(-self.dim))))
        weights = self.weights.astype(dtype)
        premultiply = self.emulate_sse and grid.shape[1] > 2  # sseCompute vs seqCompute
        out = np.zeros((len(self.offsets), grid.shape[1]), dtype)
        for r in range(self.dim + 1):
            w = weights[:, r : r + 1]
            vertex = grid[self.offsets[:, r]]
            out += (w * alpha) * vertex if premultiply else (w * vertex) * alpha
        return out

    def symmetric_norm(self, dtype: type = F32) -> np.ndarray:
        """n = 1 / sqrt(filter(1) + 1e-20), [P] (computed in double, stored in dtype)."""
        if dtype not in self._norm:
            ones = np.ones(self.n_points, dtype)
            norm = 1.0 / np.sqrt(self.filter(ones).astype(np.float64) + 1e-20)
            self._norm[dtype] = norm.astype(dtype)
        return self._norm[dtype]


def permutohedral_filter(
    features: np.ndarray, values: np.ndarray, reverse: bool = False
) -> np.ndarray:
    """One-shot filter: features [P, d], values [P, C] -> [P, C] (see :class:`LatticeRef`)."""
    return LatticeRef(features).filter(values, reverse=reverse)


def symmetric_filter(lattice: LatticeRef, values: np.ndarray) -> np.ndarray:
    """n ⊙ filter(n ⊙ v) with n = 1/sqrt(filter(1) + 1e-20): values [P, C] -> [P, C]."""
    vals = np.asarray(values)
    dtype = np.float64 if vals.dtype == np.float64 else F32
    norm = lattice.symmetric_norm(dtype)[:, None]
    return norm * lattice.filter(norm * vals.astype(dtype))


# --------------------------------------------------------------------------- features


def bilateral_features(image_hwc: np.ndarray, sxy: float, srgb: float) -> np.ndarray:
    """(x/sxy, y/sxy, r/srgb, g/srgb, b/srgb) per pixel, row-major: float32 [H*W, 5].

    x is the column index. Divisions in float32, as pydensecrf's DenseCRF2D does.
    """
    height, width = image_hwc.shape[:2]
    ys, xs = np.mgrid[0:height, 0:width].astype(F32)
    rgb = np.asarray(image_hwc).reshape(height * width, 3).astype(F32)
    feats = np.empty((height * width, 5), F32)
    feats[:, 0] = xs.reshape(-1) / F32(sxy)
    feats[:, 1] = ys.reshape(-1) / F32(sxy)
    feats[:, 2:] = rgb / F32(srgb)
    return feats


def gaussian_features(height: int, width: int, sxy: float) -> np.ndarray:
    """(x/sxy, y/sxy) per pixel, row-major: float32 [H*W, 2]."""
    ys, xs = np.mgrid[0:height, 0:width].astype(F32)
    return np.stack([xs.reshape(-1), ys.reshape(-1)], axis=1) / F32(sxy)


def brute_force_gaussian(features: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Exact sum_q exp(-|f_p - f_q|^2 / 2) v_q in float64 (self term included): [P, C]."""
    feats = np.asarray(features, np.float64)
    vals = np.asarray(values, np.float64).reshape(len(feats), -1)
    out = np.empty_like(vals)
    sq = (feats**2).sum(axis=1)
    for start in range(0, len(feats), 1024):  # chunks keep the distance matrix small
        block = feats[start : start + 1024]
        dist2 = sq[start : start + 1024, None] + sq[None, :] - 2.0 * block @ feats.T
        out[start : start + 1024] = np.exp(-0.5 * np.maximum(dist2, 0.0)) @ vals
    return out
