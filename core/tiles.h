// Products split into fixed tiles spread over the OpenMP threads, as the kernel blocks
// (core/kernels.cc) and the MLP training step (core/mlp_net.cc) compute them: each tile is one
// task, typically a single-threaded GEMM (Eigen runs sequentially inside a parallel region) and an
// elementwise pass while the tile is still in cache. A tile's values do not depend on which thread
// computes it, so the results are the same for any thread count.
#ifndef DRFM_CORE_TILES_H_
#define DRFM_CORE_TILES_H_

#include <algorithm>

#include <Eigen/Core>

namespace drfm::core {

// Calls fn(r0, nr, c0, nc) once for every tile [r0, r0 + nr) x [c0, c0 + nc) of a rows x cols
// output cut into tiles of tile_rows x tile_cols (smaller at the edges), in parallel; threads take
// one tile at a time.
template <typename Fn>
void ForEachTile(Eigen::Index rows, Eigen::Index cols, Eigen::Index tile_rows,
                 Eigen::Index tile_cols, const Fn& fn) {
  const Eigen::Index row_tiles = (rows + tile_rows - 1) / tile_rows;
  const Eigen::Index col_tiles = (cols + tile_cols - 1) / tile_cols;
#pragma omp parallel for schedule(dynamic, 1)
  for (Eigen::Index t = 0; t < row_tiles * col_tiles; ++t) {
    const Eigen::Index r0 = (t / col_tiles) * tile_rows;
    const Eigen::Index c0 = (t % col_tiles) * tile_cols;
    fn(r0, std::min(tile_rows, rows - r0), c0, std::min(tile_cols, cols - c0));
  }
}

}  // namespace drfm::core

#endif  // DRFM_CORE_TILES_H_
