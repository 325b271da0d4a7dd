//! Relative-position bias of windowed attention: the index into the learned table (Swin's and
//! the TF/MaxViT convention), the TF-style bias module, and the resize of a table to another
//! window size (timm's `resize_rel_pos_bias_table`).

use burn::module::Param;
use burn::nn::Initializer;
use burn::prelude::*;

/// Index into a `[(2·wh−1)·(2·ww−1), heads]` table for every (query, key) pair of a window.
///
/// Returns `wh·ww · wh·ww` indices, row-major over (query, key), as the
/// `relative_position_index` buffer of timm's Swin `WindowAttention`: the offset is the
/// query's position minus the key's.
pub fn relative_position_index(window: [usize; 2]) -> Vec<i64> {
    offset_index(window, false)
}

/// Index into one head's `[2·wh−1, 2·ww−1]` table (flattened row-major) for every
/// (query, key) pair of a window, with the offset taken as the key's position minus the
/// query's: the TF MaxViT convention of timm's `RelPosBiasTf` (its one-hot lookup einsums
/// reduce to `table[h, ak − aq + wh − 1, bk − bq + ww − 1]`). It is the transpose of
/// [`relative_position_index`] over (query, key).
///
/// Returns `wh·ww · wh·ww` indices, row-major over (query, key).
pub fn relative_position_index_tf(window: [usize; 2]) -> Vec<i64> {
    offset_index(window, true)
}

fn offset_index(window: [usize; 2], key_minus_query: bool) -> Vec<i64> {
    let [wh, ww] = window;
    let coords: Vec<(i64, i64)> = (0..wh)
        .flat_map(|y| (0..ww).map(move |x| (y as i64, x as i64)))
        .collect();
    let mut index = Vec::with_capacity(coords.len() * coords.len());
    for &(qy, qx) in &coords {
        for &(ky, kx) in &coords {
            let (dy, dx) = if key_minus_query { (ky - qy, kx - qx) } else { (qy - ky, qx - kx) };
            index.push((dy + wh as i64 - 1) * (2 * ww as i64 - 1) + dx + ww as i64 - 1);
        }
    }
    index
}

/// Configuration of a [`RelativePositionBiasTf`].
#[derive(Config, Debug)]
pub struct RelativePositionBiasTfConfig {
    /// Partition `[height, width]` in tokens.
    pub window: [usize; 2],
    /// Number of attention heads.
    pub num_heads: usize,
}

/// Learned relative-position bias in the TF MaxViT layout (timm's `RelPosBiasTf`): one
/// `[2·wh−1, 2·ww−1]` plane per head, rows the vertical offset, indexed key minus query
/// ([`relative_position_index_tf`]). Key `relative_position_bias_table`.
#[derive(Module, Debug)]
pub struct RelativePositionBiasTf {
    /// `[heads, 2·wh−1, 2·ww−1]`.
    pub relative_position_bias_table: Param<Tensor<3>>,
    /// Gathers a head's flattened plane into `[N·N]` (query, key) pairs; recomputed from the
    /// window, never loaded (timm's `height_lookup`/`width_lookup` are not saved either). A
    /// constant, not skipped: `valid()` must move it off the autodiff device with the weights.
    index: Tensor<1, Int>,
    window: [usize; 2],
}

impl RelativePositionBiasTfConfig {
    /// Table `N(0, .02²)`, as timm's `reset_parameters` (not truncated).
    pub fn init(&self, device: &Device) -> RelativePositionBiasTf {
        let [wh, ww] = self.window;
        let n = wh * ww;
        let index = relative_position_index_tf(self.window);
        RelativePositionBiasTf {
            relative_position_bias_table: Initializer::Normal { mean: 0.0, std: 0.02 }
                .init([self.num_heads, 2 * wh - 1, 2 * ww - 1], device),
            index: Tensor::from_data(TensorData::new(index, [n * n]), device),
            window: self.window,
        }
    }
}

impl RelativePositionBiasTf {
    /// Partition `[height, width]` this bias was built for.
    pub fn window(&self) -> [usize; 2] {
        self.window
    }

    /// The bias of every (query, key) pair per head, to add to the attention logits.
    ///
    /// # Shapes
    /// - returns `[heads, N, N]` with `N = wh·ww`
    pub fn bias(&self) -> Tensor<3> {
        let [heads, th, tw] = self.relative_position_bias_table.dims();
        let n = self.window[0] * self.window[1];
        self.relative_position_bias_table
            .val()
            .reshape([heads, th * tw])
            .select(1, self.index.clone())
            .reshape([heads, n, n])
    }
}

/// Resizes a relative-position table `[(2·h−1)·(2·w−1), heads]` (row-major) from window
/// `from` to window `to`, as timm's `resize_rel_pos_bias_table` does when a checkpoint's
/// window differs from the model's.
///
/// timm (without scipy, its default) does not resample on a uniform grid: the source offsets
/// are spread on a geometric progression that reaches the target's extent (BEiT's scheme),
/// and the target's integer offsets are interpolated linearly between them, values beyond
/// the outermost source offsets taking the edge value.
pub fn resize_relative_position_table(
    table: &[f32],
    heads: usize,
    from: [usize; 2],
    to: [usize; 2],
) -> Vec<f32> {
    let (src_h, src_w) = (2 * from[0] - 1, 2 * from[1] - 1);
    let (dst_h, dst_w) = (2 * to[0] - 1, 2 * to[1] - 1);
    assert_eq!(table.len(), src_h * src_w * heads, "table does not match window {from:?}");
    if (src_h, src_w) == (dst_h, dst_w) {
        return table.to_vec();
    }
    let taps_y = linear_taps(&geometric_offsets(src_h, dst_h), dst_h);
    let taps_x = linear_taps(&geometric_offsets(src_w, dst_w), dst_w);
    let mut out = Vec::with_capacity(dst_h * dst_w * heads);
    for &(y0, y1, wy0, wy1) in &taps_y {
        for &(x0, x1, wx0, wx1) in &taps_x {
            for head in 0..heads {
                let at = |y: usize, x: usize| table[(y * src_w + x) * heads + head] as f64;
                let v = at(y0, x0) * wy0 * wx0 + at(y0, x1) * wy0 * wx1 + at(y1, x0) * wy1 * wx0 + at(y1, x1) * wy1 * wx1;
                out.push(v as f32);
            }
        }
    }
    out
}

/// timm's source offsets for `src` table positions stretched towards `dst` positions: the
/// ratio `q` of the progression `1, q, q², …` is found by bisection so that its sum over half
/// the table reaches half the target; offsets are its partial sums, mirrored around 0.
fn geometric_offsets(src: usize, dst: usize) -> Vec<f64> {
    let half = src / 2;
    let progression = |q: f64| (1.0 - q.powi(half as i32)) / (1.0 - q);
    let (mut left, mut right, mut q) = (1.01f64, 1.5f64, 1.01f64);
    while right - left > 1e-6 {
        q = (left + right) / 2.0;
        if progression(q) > (dst / 2) as f64 {
            right = q;
        } else {
            left = q;
        }
    }
    let mut distances = Vec::with_capacity(half);
    let mut current = 1.0f64;
    for i in 0..half {
        distances.push(current);
        current += q.powi(i as i32 + 1);
    }
    // torch.tensor() of these Python floats stores them as float32
    let round = |v: f64| v as f32 as f64;
    let mut offsets: Vec<f64> = distances.iter().rev().map(|d| round(-d)).collect();
    offsets.push(0.0);
    offsets.extend(distances.iter().map(|d| round(*d)));
    offsets
}

/// For each integer target offset `−dst/2 ..= dst/2`: the two bracketing source indices and
/// their linear weights, with timm's `RegularGridInterpolator` edge rules (clamp outside).
fn linear_taps(points: &[f64], dst: usize) -> Vec<(usize, usize, f64, f64)> {
    let last = points.len() - 1;
    let half = (dst / 2) as f64;
    (0..dst)
        .map(|i| {
            let x = i as f64 - half;
            let right = points.iter().position(|&p| p >= x).unwrap_or(last);
            let left = right.saturating_sub(1);
            let mut to_left = (x - points[left]).max(0.0);
            let mut to_right = (points[right] - x).max(0.0);
            if to_left == 0.0 && to_right == 0.0 {
                (to_left, to_right) = (1.0, 1.0);
            }
            let total = to_left + to_right;
            // the left value weighs by the distance to the right point, and vice versa
            (left, right, to_right / total, to_left / total)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_of_a_2x2_window_matches_timm() {
        // timm: relative_position_index for window (2, 2)
        let expected = vec![4, 3, 1, 0, 5, 4, 2, 1, 7, 6, 4, 3, 8, 7, 5, 4];
        assert_eq!(relative_position_index([2, 2]), expected);
    }

    #[test]
    fn tf_index_is_key_minus_query() {
        // timm's RelPosBiasTf for window (2, 2): the transpose of Swin's index above
        let expected = vec![4, 5, 7, 8, 3, 4, 6, 7, 1, 2, 4, 5, 0, 1, 3, 4];
        assert_eq!(relative_position_index_tf([2, 2]), expected);
        // window (2, 3), table 3x5: rows of the flat index, as timm's one-hot einsums give
        let expected: Vec<i64> = vec![
            7, 8, 9, 12, 13, 14, //
            6, 7, 8, 11, 12, 13, //
            5, 6, 7, 10, 11, 12, //
            2, 3, 4, 7, 8, 9, //
            1, 2, 3, 6, 7, 8, //
            0, 1, 2, 5, 6, 7,
        ];
        assert_eq!(relative_position_index_tf([2, 3]), expected);
    }

    #[test]
    fn tf_bias_gathers_each_head_plane() {
        let device = Device::flex();
        let mut rel = RelativePositionBiasTfConfig::new([2, 3], 2).init(&device);
        // head h, flat plane position p holds 100·h + p
        let table: Vec<f32> = (0..2).flat_map(|h| (0..15).map(move |p| (100 * h + p) as f32)).collect();
        rel.relative_position_bias_table = Param::from_tensor(Tensor::from_data(TensorData::new(table, [2, 3, 5]), &device));
        let bias = rel.bias();
        assert_eq!(bias.dims(), [2, 6, 6]);
        let values = bias.into_data().try_to_vec::<f32>().unwrap();
        let index = relative_position_index_tf([2, 3]);
        for h in 0..2 {
            for p in 0..36 {
                assert_eq!(values[h * 36 + p], (100 * h as i64 + index[p]) as f32);
            }
        }
        // query (0, 0) vs key (1, 2): offset (+1, +2) -> plane row 1 + 1, column 2 + 2
        assert_eq!(values[5], (2 * 5 + 4) as f32); // head 0, query 0, key 5
    }

    #[test]
    fn index_covers_the_table_and_centre_is_the_diagonal() {
        let index = relative_position_index([3, 4]);
        let table_len = 5 * 7;
        assert!(index.iter().all(|&i| (0..table_len as i64).contains(&i)));
        let n = 12;
        for q in 0..n {
            assert_eq!(index[q * n + q], (2 * 7 + 3) as i64, "zero offset is the table centre");
        }
    }

    #[test]
    fn same_size_resize_is_identity_and_constants_stay_constant() {
        let table: Vec<f32> = (0..25 * 2).map(|v| v as f32 * 0.1).collect();
        assert_eq!(resize_relative_position_table(&table, 2, [3, 3], [3, 3]), table);
        let constant = vec![1.5f32; 9 * 3];
        let grown = resize_relative_position_table(&constant, 3, [2, 2], [5, 5]);
        assert_eq!(grown.len(), 81 * 3);
        assert!(grown.iter().all(|v| (v - 1.5).abs() < 1e-6));
    }

    #[test]
    fn offsets_stretch_to_the_target_extent_and_keep_the_centre() {
        // window 7 -> 12: the ratio is found below its cap, the progression reaches 11
        let offsets = geometric_offsets(13, 23);
        assert_eq!(offsets.len(), 13);
        assert_eq!(offsets[6], 0.0);
        assert!((offsets[12] - 11.0).abs() < 1e-4, "outermost offset {offsets:?} reaches dst/2");
        assert!((offsets[0] + offsets[12]).abs() < 1e-12, "mirrored");
        // window 3 -> 6: the ratio hits its cap of 1.5 and the offsets stop short (timm too)
        let capped = geometric_offsets(5, 11);
        let expected = [-2.5, -1.0, 0.0, 1.0, 2.5];
        assert!(capped.iter().zip(expected).all(|(a, b)| (a - b).abs() < 1e-5), "{capped:?}");
        // the centre of the resized table is the centre of the source table
        let table: Vec<f32> = (0..25).map(|v| v as f32).collect();
        let out = resize_relative_position_table(&table, 1, [3, 3], [6, 6]);
        assert_eq!(out[5 * 11 + 5], 12.0);
    }
}
