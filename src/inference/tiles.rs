//! Large outputs from a fixed-size model: the canvas is covered by overlapping tiles of the
//! model's size, every tile is denoised by the model (several per ONNX Runtime run, through the
//! batch dimension), and the tiles are blended at their seams.
//!
//! **Layout.** Along each axis, `n = ceil((S - T) / (T - MIN_OVERLAP)) + 1` tiles of side `T`
//! cover a side `S`, spread evenly (first at 0, last at `S - T`), so neighbours overlap by at
//! least [`MIN_OVERLAP`] pixels. A 256² terrain is 3×3 tiles of 128² overlapping by 64.
//!
//! **Blending.** A tile's weight is 1 in its middle and falls to 0 across each overlap with a
//! neighbour as a raised cosine (`sin²` on one side, `cos²` on the other, so two overlapping
//! tiles' weights sum to 1); on the sides that are the canvas's border it stays 1. Every pixel
//! is the weighted mean of the tiles covering it, so a seam is a smooth cross-fade over the
//! overlap rather than a step.
//!
//! **Noise.** The sampler draws one noise field for the whole canvas and each tile is a crop of
//! it, so overlapping tiles see the same noise where they overlap (their estimates agree more)
//! and a 128² canvas is exactly the untiled run.

use super::sampler::Denoiser;
use super::RunError;

/// The least overlap between neighbouring tiles, in pixels.
pub const MIN_OVERLAP: usize = 32;
/// Tiles per ONNX Runtime run (the model's batch dimension).
pub const TILE_BATCH: usize = 4;

/// Where the tiles of one axis start.
fn axis_offsets(side: usize, tile: usize) -> Result<Vec<usize>, String> {
    if tile <= MIN_OVERLAP || side < tile {
        return Err(format!(
            "a side of {side} cannot be covered by tiles of {tile}"
        ));
    }
    if side == tile {
        return Ok(vec![0]);
    }
    let span = side - tile;
    let gaps = span.div_ceil(tile - MIN_OVERLAP);
    Ok((0..=gaps).map(|i| (i * span + gaps / 2) / gaps).collect())
}

/// The raised-cosine weights of one tile along one axis: `start` is the tile's offset,
/// `prev_end` where the previous tile ends and `next_start` where the next begins (if it has
/// those neighbours): the spans where they overlap this one.
fn axis_weights(
    tile: usize,
    start: usize,
    prev_end: Option<usize>,
    next_start: Option<usize>,
) -> Vec<f32> {
    (0..tile)
        .map(|i| {
            let p = start + i;
            let mut w = 1.0f32;
            if let Some(end) = prev_end.filter(|e| p < *e) {
                // Overlap [start, end): rises from 0 to 1.
                let len = (end - start) as f32;
                let t = (i as f32 + 0.5) / len;
                w *= (std::f32::consts::FRAC_PI_2 * t).sin().powi(2);
            }
            if let Some(next) = next_start.filter(|n| p >= *n) {
                // Overlap [next, start + tile): falls from 1 to 0.
                let len = (start + tile - next) as f32;
                let t = ((p - next) as f32 + 0.5) / len;
                w *= (std::f32::consts::FRAC_PI_2 * t).cos().powi(2);
            }
            w
        })
        .collect()
}

/// One tile: its top-left corner on the canvas and its weights (`tile_h × tile_w`).
#[derive(Debug, Clone)]
struct Tile {
    y: usize,
    x: usize,
    weights: Vec<f32>,
}

/// The tiles covering a `height × width` canvas with `tile_h × tile_w` tiles.
#[derive(Debug, Clone)]
pub struct TileGrid {
    pub height: usize,
    pub width: usize,
    pub tile_h: usize,
    pub tile_w: usize,
    tiles: Vec<Tile>,
    /// Per canvas pixel: the sum of the weights of the tiles covering it (> 0 everywhere).
    weight_sum: Vec<f32>,
}

impl TileGrid {
    pub fn new(height: usize, width: usize, tile_h: usize, tile_w: usize) -> Result<Self, String> {
        let ys = axis_offsets(height, tile_h)?;
        let xs = axis_offsets(width, tile_w)?;
        let axis = |offsets: &[usize], tile: usize| -> Vec<Vec<f32>> {
            (0..offsets.len())
                .map(|k| {
                    let prev_end = k.checked_sub(1).map(|j| offsets[j] + tile);
                    let next_start = offsets.get(k + 1).copied();
                    axis_weights(tile, offsets[k], prev_end, next_start)
                })
                .collect()
        };
        let (wy, wx) = (axis(&ys, tile_h), axis(&xs, tile_w));
        let mut tiles = Vec::with_capacity(ys.len() * xs.len());
        let mut weight_sum = vec![0f32; height * width];
        for (ky, &y) in ys.iter().enumerate() {
            for (kx, &x) in xs.iter().enumerate() {
                let mut weights = Vec::with_capacity(tile_h * tile_w);
                for (i, a) in wy[ky].iter().enumerate() {
                    for (j, b) in wx[kx].iter().enumerate() {
                        let w = a * b;
                        weights.push(w);
                        weight_sum[(y + i) * width + x + j] += w;
                    }
                }
                tiles.push(Tile { y, x, weights });
            }
        }
        if weight_sum.iter().any(|w| *w <= 0.0) {
            return Err("the tiles leave a pixel without weight".into());
        }
        Ok(TileGrid {
            height,
            width,
            tile_h,
            tile_w,
            tiles,
            weight_sum,
        })
    }

    pub fn len(&self) -> usize {
        self.tiles.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tiles.is_empty()
    }

    /// Tile `k`'s pixels of `canvas`.
    fn crop(&self, canvas: &[f32], k: usize, out: &mut Vec<f32>) {
        let t = &self.tiles[k];
        for i in 0..self.tile_h {
            let row = (t.y + i) * self.width + t.x;
            out.extend_from_slice(&canvas[row..row + self.tile_w]);
        }
    }

    /// Adds tile `k`'s values, weighted, to `acc` (a canvas-sized accumulator).
    fn accumulate(&self, acc: &mut [f32], k: usize, values: &[f32]) {
        let t = &self.tiles[k];
        for i in 0..self.tile_h {
            for j in 0..self.tile_w {
                let at = i * self.tile_w + j;
                acc[(t.y + i) * self.width + t.x + j] += values[at] * t.weights[at];
            }
        }
    }

    /// The weighted mean of the accumulated tiles.
    fn normalise(&self, acc: &[f32]) -> Vec<f32> {
        acc.iter()
            .zip(&self.weight_sum)
            .map(|(a, w)| a / w)
            .collect()
    }

    /// What the canvas looks like with the tiles accumulated so far (pixels no tile has reached
    /// yet are 0); for progress previews.
    fn partial(&self, acc: &[f32], seen: &[f32]) -> Vec<f32> {
        acc.iter()
            .zip(seen)
            .map(|(a, w)| if *w > 0.0 { a / w } else { 0.0 })
            .collect()
    }
}

/// A model run on several images of the tile's size at once: `xs` holds `n` images back to
/// back; the result has the same layout.
pub trait BatchDenoiser {
    fn denoise_batch(&mut self, xs: &[f32], n: usize, sigma: f32) -> Result<Vec<f32>, RunError>;
}

/// Progress after a tile: `done` of `total` tiles (over every sampler step), and the canvas as
/// blended so far (model space).
pub struct TileProgress<'a> {
    pub done: u32,
    pub total: u32,
    pub sigma: f32,
    pub canvas: &'a [f32],
}

/// A [`Denoiser`] for the whole canvas that runs `inner` on the tiles of `grid`, [`TILE_BATCH`]
/// at a time, and blends the results. `on_tile` is called once per tile.
pub struct TiledDenoiser<'a, D: BatchDenoiser + ?Sized> {
    pub inner: &'a mut D,
    pub grid: &'a TileGrid,
    /// Tiles over the whole run (tiles × sampler steps), for progress.
    pub total: u32,
    pub done: u32,
    pub on_tile: &'a mut dyn FnMut(TileProgress<'_>),
}

impl<D: BatchDenoiser + ?Sized> Denoiser for TiledDenoiser<'_, D> {
    fn denoise(&mut self, x: &[f32], sigma: f32) -> Result<Vec<f32>, RunError> {
        let grid = self.grid;
        if x.len() != grid.height * grid.width {
            return Err(RunError::Internal(format!(
                "a {}x{} canvas needs {} values, got {}",
                grid.width,
                grid.height,
                grid.height * grid.width,
                x.len()
            )));
        }
        let per_tile = grid.tile_h * grid.tile_w;
        let mut acc = vec![0f32; x.len()];
        let mut seen = vec![0f32; x.len()];
        let ids: Vec<usize> = (0..grid.len()).collect();
        for chunk in ids.chunks(TILE_BATCH) {
            let mut batch = Vec::with_capacity(chunk.len() * per_tile);
            for &k in chunk {
                grid.crop(x, k, &mut batch);
            }
            let out = self.inner.denoise_batch(&batch, chunk.len(), sigma)?;
            if out.len() != batch.len() {
                return Err(RunError::Internal(format!(
                    "the model returned {} values for {} tiles",
                    out.len(),
                    chunk.len()
                )));
            }
            for (i, &k) in chunk.iter().enumerate() {
                grid.accumulate(&mut acc, k, &out[i * per_tile..(i + 1) * per_tile]);
                let ones = vec![1.0; per_tile];
                grid.accumulate(&mut seen, k, &ones);
                self.done += 1;
                (self.on_tile)(TileProgress {
                    done: self.done,
                    total: self.total,
                    sigma,
                    canvas: &grid.partial(&acc, &seen),
                });
            }
        }
        Ok(grid.normalise(&acc))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_cover_the_side_with_enough_overlap() {
        assert_eq!(axis_offsets(128, 128).unwrap(), vec![0]);
        assert_eq!(axis_offsets(256, 128).unwrap(), vec![0, 64, 128]);
        assert_eq!(axis_offsets(192, 128).unwrap(), vec![0, 64]);
        for side in (128..=1024).step_by(32) {
            let o = axis_offsets(side, 128).unwrap();
            assert_eq!(o[0], 0);
            assert_eq!(*o.last().unwrap() + 128, side, "{side}: {o:?}");
            assert!(
                o.windows(2)
                    .all(|w| w[1] > w[0] && w[0] + 128 - w[1] >= MIN_OVERLAP),
                "{side}: {o:?}"
            );
        }
        assert!(axis_offsets(100, 128).is_err());
    }

    #[test]
    fn weights_are_a_partition_of_unity_with_border_weight_one() {
        for (h, w) in [(128, 128), (256, 256), (384, 512), (192, 320)] {
            let grid = TileGrid::new(h, w, 128, 128).unwrap();
            // An identity model: the blended canvas is the input, exactly (up to rounding).
            let x: Vec<f32> = (0..h * w)
                .map(|i| ((i * 7919) % 1000) as f32 / 100.0)
                .collect();
            let mut identity = Identity;
            let mut calls = 0;
            let mut on_tile = |_: TileProgress<'_>| calls += 1;
            let mut tiled = TiledDenoiser {
                inner: &mut identity,
                grid: &grid,
                total: grid.len() as u32,
                done: 0,
                on_tile: &mut on_tile,
            };
            let out = tiled.denoise(&x, 1.0).unwrap();
            assert!(
                out.iter().zip(&x).all(|(a, b)| (a - b).abs() < 1e-4),
                "{h}x{w}"
            );
            assert_eq!(calls, grid.len());
        }
        let grid = TileGrid::new(256, 256, 128, 128).unwrap();
        assert_eq!(grid.len(), 9);
        // The first tile keeps weight 1 along the canvas's border, 0-ish at its inner edge.
        let t = &grid.tiles[0];
        assert_eq!(t.weights[0], 1.0);
        assert!(t.weights[127] < 1e-3);
    }

    struct Identity;
    impl BatchDenoiser for Identity {
        fn denoise_batch(
            &mut self,
            xs: &[f32],
            _n: usize,
            _sigma: f32,
        ) -> Result<Vec<f32>, RunError> {
            Ok(xs.to_vec())
        }
    }

    /// Every tile returns one constant (its index): blended, neighbouring pixels never jump by
    /// more than a small fraction of the tile-to-tile step, where naive tiling jumps by all of it.
    #[test]
    fn seams_are_cross_fades() {
        struct Constant(f32);
        impl BatchDenoiser for Constant {
            fn denoise_batch(
                &mut self,
                xs: &[f32],
                n: usize,
                _: f32,
            ) -> Result<Vec<f32>, RunError> {
                let per = xs.len() / n;
                let mut out = Vec::new();
                for _ in 0..n {
                    out.extend(std::iter::repeat_n(self.0, per));
                    self.0 += 10.0;
                }
                Ok(out)
            }
        }
        let grid = TileGrid::new(256, 256, 128, 128).unwrap();
        let mut inner = Constant(0.0);
        let mut on_tile = |_: TileProgress<'_>| {};
        let mut tiled = TiledDenoiser {
            inner: &mut inner,
            grid: &grid,
            total: 9,
            done: 0,
            on_tile: &mut on_tile,
        };
        let out = tiled.denoise(&vec![0.0; 256 * 256], 1.0).unwrap();
        let mut worst = 0f32;
        for y in 0..256 {
            for x in 0..255 {
                worst = worst.max((out[y * 256 + x + 1] - out[y * 256 + x]).abs());
            }
        }
        assert!(worst < 10.0 * 0.05, "largest neighbour step {worst}");
    }
}
