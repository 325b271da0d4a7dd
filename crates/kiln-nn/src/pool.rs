//! Non-overlapping max pooling that keeps partial edge blocks, and the scale pyramid built
//! from it (Atlas' coarse scales, which are max-pools of the finest map).

use burn::prelude::*;
use burn::tensor::module::max_pool2d;
use burn::tensor::ops::{MaxPoolOptions, PadMode};

/// Max pooling with kernel = stride = `factor`, where a partial block at the bottom or right
/// edge takes the max of the elements it has (PyTorch's `ceil_mode=True` without padding).
///
/// # Shapes
/// - `x`: `[batch, C, H, W]` -> `[batch, C, ceil(H / factor), ceil(W / factor)]`
pub fn max_pool_ceil(x: Tensor<4>, factor: usize) -> Tensor<4> {
    let [_, _, h, w] = x.dims();
    let (pad_h, pad_w) = (h.div_ceil(factor) * factor - h, w.div_ceil(factor) * factor - w);
    let x = if pad_h + pad_w > 0 {
        x.pad([(0, pad_h), (0, pad_w)], PadMode::Constant(f32::NEG_INFINITY))
    } else {
        x
    };
    max_pool2d(x, MaxPoolOptions::new([factor, factor]))
}

/// The finest map and `levels − 1` coarser ones, each the [`max_pool_ceil`] of the previous
/// by `factor`. For sides divisible by the factors this equals pooling the finest map
/// directly with kernel `factor^l` (a max of maxes over nested blocks), which is how the
/// official Atlas builds its scales.
///
/// # Shapes
/// - `x`: `[batch, C, H, W]`
/// - returns `levels` maps, level `l` of side `ceil(H / factor^l)`
pub fn max_pool_pyramid(x: Tensor<4>, levels: usize, factor: usize) -> Vec<Tensor<4>> {
    let mut maps = Vec::with_capacity(levels);
    if levels == 0 {
        return maps;
    }
    maps.push(x);
    for _ in 1..levels {
        let coarser = max_pool_ceil(maps.last().expect("one map").clone(), factor);
        maps.push(coarser);
    }
    maps
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::test_values as values;


    #[test]
    fn partial_edge_blocks_take_the_max_of_what_they_have() {
        let device = Device::flex();
        // 5x5 map 0..25, factor 2: blocks of rows {0,1},{2,3},{4} and the same for columns
        let x = Tensor::<1, Int>::arange(0..25, &device).float().reshape([1, 1, 5, 5]);
        let y = max_pool_ceil(x.clone().neg(), 2);
        assert_eq!(y.dims(), [1, 1, 3, 3]);
        // with negated values the max of each block is its smallest index
        assert_eq!(values(y), vec![-0., -2., -4., -10., -12., -14., -20., -22., -24.]);
        let y = max_pool_ceil(x, 2);
        assert_eq!(values(y), vec![6., 8., 9., 16., 18., 19., 21., 23., 24.]);
    }

    #[test]
    fn pyramid_equals_direct_pooling_when_sides_divide() {
        let device = Device::flex();
        let x = Tensor::<4>::random([2, 3, 32, 32], burn::tensor::Distribution::Default, &device);
        let pyramid = max_pool_pyramid(x.clone(), 3, 4);
        assert_eq!(pyramid.iter().map(|m| m.dims()[2]).collect::<Vec<_>>(), vec![32, 8, 2]);
        for (level, kernel) in [(1, 4), (2, 16)] {
            let direct = max_pool2d(x.clone(), MaxPoolOptions::new([kernel, kernel]));
            assert_eq!(values(pyramid[level].clone()), values(direct), "level {level}");
        }
        assert_eq!(values(pyramid[0].clone()), values(x));
    }
}
