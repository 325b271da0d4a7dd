//! Non-overlapping window partition and its inverse, for windowed attention; and the dilated
//! grid partition of MaxViT's grid attention.

use burn::prelude::*;

/// Splits a channels-last map into non-overlapping windows, row-major over windows.
///
/// # Shapes
/// - `x`: `[batch, height, width, channels]`, `height`/`width` multiples of the window
/// - returns `[batch * num_windows, window_h * window_w, channels]`, windows ordered
///   batch-major then row-major, as timm's `window_partition`.
pub fn window_partition(x: Tensor<4>, window: [usize; 2]) -> Tensor<3> {
    let [batch, height, width, channels] = x.dims();
    let [wh, ww] = window;
    assert!(
        height % wh == 0 && width % ww == 0,
        "map {height}x{width} does not tile into {wh}x{ww} windows"
    );
    x.reshape([batch, height / wh, wh, width / ww, ww, channels])
        .permute([0, 1, 3, 2, 4, 5])
        .reshape([batch * (height / wh) * (width / ww), wh * ww, channels])
}

/// Reassembles windows made by [`window_partition`] into a map.
///
/// # Shapes
/// - `windows`: `[batch * num_windows, window_h * window_w, channels]`
/// - returns `[batch, height, width, channels]`
pub fn window_reverse(windows: Tensor<3>, window: [usize; 2], height: usize, width: usize) -> Tensor<4> {
    let [num, _, channels] = windows.dims();
    let [wh, ww] = window;
    let batch = num / ((height / wh) * (width / ww));
    windows
        .reshape([batch, height / wh, width / ww, wh, ww, channels])
        .permute([0, 1, 3, 2, 4, 5])
        .reshape([batch, height, width, channels])
}

/// Splits a channels-last map into `grid_h × grid_w` dilated grids (MaxViT's grid attention,
/// timm's `grid_partition`): partition `(i, j)` holds the tokens `x[a·H/gh + i, b·W/gw + j]`
/// for `a < gh`, `b < gw`, so the grid size is the number of tokens per partition and
/// `(H/gh, W/gw)` their spacing.
///
/// # Shapes
/// - `x`: `[batch, height, width, channels]`, `height`/`width` multiples of the grid
/// - returns `[batch · (H/gh) · (W/gw), grid_h · grid_w, channels]`, partitions ordered
///   batch-major then row-major over `(i, j)`, tokens row-major over `(a, b)`.
pub fn grid_partition(x: Tensor<4>, grid: [usize; 2]) -> Tensor<3> {
    let [batch, height, width, channels] = x.dims();
    let [gh, gw] = grid;
    assert!(
        height % gh == 0 && width % gw == 0,
        "map {height}x{width} does not divide into a {gh}x{gw} grid"
    );
    x.reshape([batch, gh, height / gh, gw, width / gw, channels])
        .permute([0, 2, 4, 1, 3, 5])
        .reshape([batch * (height / gh) * (width / gw), gh * gw, channels])
}

/// Puts partitions made by [`grid_partition`] back into a map.
///
/// # Shapes
/// - `partitions`: `[batch · (H/gh) · (W/gw), grid_h · grid_w, channels]`
/// - returns `[batch, height, width, channels]`
pub fn grid_reverse(partitions: Tensor<3>, grid: [usize; 2], height: usize, width: usize) -> Tensor<4> {
    let [num, _, channels] = partitions.dims();
    let [gh, gw] = grid;
    let batch = num / ((height / gh) * (width / gw));
    partitions
        .reshape([batch, height / gh, width / gw, gh, gw, channels])
        .permute([0, 3, 1, 4, 2, 5])
        .reshape([batch, height, width, channels])
}

/// Swin's attention mask for shifted windows over a (padded) `height × width` map.
///
/// After a cyclic shift by `shift`, windows on the bottom and right edges hold tokens from
/// regions that were not adjacent in the image; pairs from different regions get −100 so they
/// do not attend to each other. The regions are `[0, H−window)`, `[H−window, H−shift)`,
/// `[H−shift, H)` per axis, as timm's `get_attn_mask`.
///
/// Returns `[num_windows, N, N]` values (0 or −100) row-major, `N = window_h · window_w`.
pub fn shifted_window_mask(size: [usize; 2], window: [usize; 2], shift: [usize; 2]) -> Vec<f32> {
    let region = |pos: usize, len: usize, win: usize, sh: usize| -> usize {
        if sh == 0 {
            0 // an unshifted axis is one region (timm's slices collapse to one)
        } else if pos < len - win {
            0
        } else if pos < len - sh {
            1
        } else {
            2
        }
    };
    let [height, width] = size;
    let [wh, ww] = window;
    let n = wh * ww;
    let mut mask = Vec::with_capacity((height / wh) * (width / ww) * n * n);
    for wy in 0..height / wh {
        for wx in 0..width / ww {
            let labels: Vec<usize> = (0..n)
                .map(|t| {
                    let (y, x) = (wy * wh + t / ww, wx * ww + t % ww);
                    region(y, height, wh, shift[0]) * 3 + region(x, width, ww, shift[1])
                })
                .collect();
            for &q in &labels {
                mask.extend(labels.iter().map(|&k| if k == q { 0.0 } else { -100.0 }));
            }
        }
    }
    mask
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_orders_windows_row_major_and_reverse_inverts() {
        let device = Device::flex();
        // one channel holding its own flat position: 0..16 on a 4x4 map
        let x = Tensor::<1, Int>::arange(0..16, &device).float().reshape([1, 4, 4, 1]);
        let windows = window_partition(x.clone(), [2, 2]);
        assert_eq!(windows.dims(), [4, 4, 1]);
        let got = windows.clone().into_data().try_to_vec::<f32>().unwrap();
        let expected = [0., 1., 4., 5., 2., 3., 6., 7., 8., 9., 12., 13., 10., 11., 14., 15.];
        assert_eq!(got, expected);
        window_reverse(windows, [2, 2], 4, 4).into_data().assert_eq(&x.into_data(), true);
    }

    #[test]
    fn shift_mask_separates_wrapped_regions() {
        // 4x4 map, window 2, shift 1: only the last row/column of windows mixes regions
        let mask = shifted_window_mask([4, 4], [2, 2], [1, 1]);
        assert_eq!(mask.len(), 4 * 4 * 4);
        let window = |w: usize| &mask[w * 16..(w + 1) * 16];
        assert!(window(0).iter().all(|&v| v == 0.0), "top-left window is one region");
        // window 1 (top-right): columns 2 (region 1) and 3 (region 2) differ
        let w1 = window(1);
        assert_eq!(w1[0 * 4 + 1], -100.0); // token (0,2) vs (0,3)
        assert_eq!(w1[0 * 4 + 2], 0.0); // token (0,2) vs (1,2)
        // window 3 (bottom-right): four different regions, only the diagonal is open
        let w3 = window(3);
        for q in 0..4 {
            for k in 0..4 {
                assert_eq!(w3[q * 4 + k], if q == k { 0.0 } else { -100.0 });
            }
        }
    }

    #[test]
    fn rectangular_windows_round_trip() {
        let device = Device::flex();
        let x = Tensor::<4>::random([2, 6, 8, 3], burn::tensor::Distribution::Default, &device);
        let windows = window_partition(x.clone(), [3, 2]);
        assert_eq!(windows.dims(), [2 * 2 * 4, 6, 3]);
        window_reverse(windows, [3, 2], 6, 8).into_data().assert_eq(&x.into_data(), true);
    }

    #[test]
    fn grid_partition_gathers_dilated_tokens_and_reverse_inverts() {
        let device = Device::flex();
        // 4x6 map of flat positions, grid 2x3: spacing (2, 2), so 2·2 = 4 partitions
        let x = Tensor::<1, Int>::arange(0..24, &device).float().reshape([1, 4, 6, 1]);
        let parts = grid_partition(x.clone(), [2, 3]);
        assert_eq!(parts.dims(), [4, 6, 1]);
        let got = parts.clone().into_data().try_to_vec::<f32>().unwrap();
        // partition (i, j) holds rows i, i+2 and columns j, j+2, j+4 (printed by timm's grid_partition)
        let expected = [
            0., 2., 4., 12., 14., 16., // (0, 0)
            1., 3., 5., 13., 15., 17., // (0, 1)
            6., 8., 10., 18., 20., 22., // (1, 0)
            7., 9., 11., 19., 21., 23., // (1, 1)
        ];
        assert_eq!(got, expected);
        grid_reverse(parts, [2, 3], 4, 6).into_data().assert_eq(&x.into_data(), true);
    }

    #[test]
    fn grid_equals_window_when_the_map_is_one_partition() {
        // a map the size of the partition: block and grid partitions coincide (timm too)
        let device = Device::flex();
        let x = Tensor::<4>::random([2, 3, 2, 4], burn::tensor::Distribution::Default, &device);
        let grid = grid_partition(x.clone(), [3, 2]).into_data();
        grid.assert_eq(&window_partition(x.clone(), [3, 2]).into_data(), true);
        let x = Tensor::<4>::random([2, 6, 8, 3], burn::tensor::Distribution::Default, &device);
        grid_reverse(grid_partition(x.clone(), [3, 2]), [3, 2], 6, 8).into_data().assert_eq(&x.into_data(), true);
    }
}
