//! Segmentation inference as mmsegmentation's `EncoderDecoder` runs it: the whole image at once
//! or overlapping sliding windows, and optional multi-scale + flip test-time augmentation.
//! Everything here takes the network as a function from an image batch to logits of the same
//! height and width, so it serves any segmenter.

use burn::prelude::*;
use burn::tensor::activation::softmax;
use kiln_nn::resize_bilinear;

/// mmseg's `mode='slide'`: windows of `crop_size` every `stride` pixels, their logits averaged
/// where they overlap. Without one, the whole image goes through in one pass (`mode='whole'`);
/// the config names the two as [`TestMode`](crate::config::TestMode).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlideWindow {
    /// `[height, width]` of a window.
    pub crop_size: [usize; 2],
    /// `[height, width]` step between windows.
    pub stride: [usize; 2],
}

/// The top-left corners of mmseg's sliding windows along one axis: `max(len − crop + stride − 1,
/// 0) / stride + 1` windows `stride` apart, each moved back to end inside the image.
fn window_starts(len: usize, crop: usize, stride: usize) -> Vec<(usize, usize)> {
    let count = (len + stride).saturating_sub(crop + 1) / stride + 1;
    (0..count)
        .map(|i| {
            let end = (i * stride + crop).min(len);
            (end.saturating_sub(crop), end)
        })
        .collect()
}

/// Logits for `x` at its own size: by sliding `window`s, or else the whole image at once.
///
/// # Shapes
/// - `x`: `[batch, channels, H, W]`; `network` maps `[batch, channels, h, w]` to
///   `[batch, classes, h, w]` -> `[batch, classes, H, W]`
pub fn infer(network: &impl Fn(Tensor<4>) -> Tensor<4>, x: Tensor<4>, window: Option<SlideWindow>) -> Tensor<4> {
    match window {
        None => network(x),
        Some(SlideWindow { crop_size, stride }) => slide(network, x, crop_size, stride),
    }
}

fn slide(network: &impl Fn(Tensor<4>) -> Tensor<4>, x: Tensor<4>, crop_size: [usize; 2], stride: [usize; 2]) -> Tensor<4> {
    let [batch, _, h, w] = x.dims();
    let device = x.device();
    let mut sum: Option<Tensor<4>> = None;
    let mut count = vec![0f32; h * w];
    for &(y0, y1) in &window_starts(h, crop_size[0], stride[0]) {
        for &(x0, x1) in &window_starts(w, crop_size[1], stride[1]) {
            let logits = network(x.clone().slice([0..batch, 0..x.dims()[1], y0..y1, x0..x1]));
            let classes = logits.dims()[1];
            let total = sum.take().unwrap_or_else(|| Tensor::zeros([batch, classes, h, w], &device));
            let ranges = [0..batch, 0..classes, y0..y1, x0..x1];
            sum = Some(total.clone().slice_assign(ranges.clone(), total.slice(ranges) + logits));
            for row in y0..y1 {
                count[row * w + x0..row * w + x1].iter_mut().for_each(|c| *c += 1.0);
            }
        }
    }
    let count = Tensor::<1>::from_data(TensorData::new(count, [h * w]), &device).reshape([1, 1, h, w]);
    sum.expect("at least one window") / count
}

/// Test-time augmentation: each scale of `scales` (factors of the input size) and, with `flip`,
/// its mirror image; class probabilities resized to the input size and averaged, as mmseg's
/// `SegTTAModel` merges them.
///
/// # Shapes
/// - `x`: `[batch, channels, H, W]` -> `[batch, classes, H, W]` probabilities
pub fn infer_tta(
    network: &impl Fn(Tensor<4>) -> Tensor<4>,
    x: Tensor<4>,
    window: Option<SlideWindow>,
    scales: &[f64],
    flip: bool,
) -> Tensor<4> {
    let [_, _, h, w] = x.dims();
    let mut sum: Option<Tensor<4>> = None;
    let mut n = 0usize;
    for &scale in scales {
        let size = [((h as f64 * scale).round() as usize).max(1), ((w as f64 * scale).round() as usize).max(1)];
        let scaled = resize_bilinear(x.clone(), size);
        for mirrored in [false, true].into_iter().take(1 + flip as usize) {
            let input = if mirrored { scaled.clone().flip([3]) } else { scaled.clone() };
            let mut logits = infer(network, input, window);
            if mirrored {
                logits = logits.flip([3]);
            }
            let probs = softmax(resize_bilinear(logits, [h, w]), 1);
            sum = Some(match sum.take() {
                Some(total) => total + probs,
                None => probs,
            });
            n += 1;
        }
    }
    sum.expect("at least one scale").div_scalar(n as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn random(shape: [usize; 4]) -> Tensor<4> {
        Tensor::random(shape, burn::tensor::Distribution::Normal(0.0, 1.0), &Device::flex())
    }

    fn max_abs_diff(a: Tensor<4>, b: Tensor<4>) -> f32 {
        (a - b).abs().max().into_scalar::<f32>()
    }

    #[test]
    fn windows_follow_mmseg_and_cover_every_pixel() {
        assert_eq!(window_starts(10, 4, 3), vec![(0, 4), (3, 7), (6, 10)]);
        // the last window is moved back to end at the border
        assert_eq!(window_starts(11, 4, 3), vec![(0, 4), (3, 7), (6, 10), (7, 11)]);
        // a window larger than the image is cut to the image: one window
        assert_eq!(window_starts(5, 8, 4), vec![(0, 5)]);
        assert_eq!(window_starts(8, 8, 4), vec![(0, 8)]);
    }

    #[test]
    fn sliding_equals_whole_when_the_window_covers_the_image() {
        // a network whose output depends on the whole image, so any stitching would show
        let weights = random([1, 3, 1, 1]);
        let network = |x: Tensor<4>| {
            let [b, _, h, w] = x.dims();
            let mean = x.clone().mean_dim(2).mean_dim(3);
            (x + mean).sum_dim(1).repeat_dim(1, 3) * weights.clone().expand([b, 3, h, w])
        };
        let x = random([2, 3, 9, 7]);
        let whole = infer(&network, x.clone(), None);
        let slide = infer(&network, x, Some(SlideWindow { crop_size: [16, 16], stride: [8, 8] }));
        assert_eq!(max_abs_diff(whole, slide), 0.0);
    }

    #[test]
    fn overlapping_windows_average_a_pixelwise_network_back_to_the_whole_image() {
        // a per-pixel network gives every window the same logits for a pixel, so the average of
        // the overlaps must equal one pass; wrong offsets or counts would not
        let network = |x: Tensor<4>| x.clone().mul_scalar(2.0) + x.powf_scalar(2.0);
        let x = random([1, 2, 13, 10]);
        let whole = infer(&network, x.clone(), None);
        let slide = infer(&network, x, Some(SlideWindow { crop_size: [6, 4], stride: [4, 3] }));
        assert!(max_abs_diff(whole, slide) < 1e-5);
    }

    #[test]
    fn windows_see_only_their_crop() {
        // the window mean differs by crop, so sliding must differ from whole here
        let network = |x: Tensor<4>| {
            let [b, c, h, w] = x.dims();
            x.clone().mean_dim(2).mean_dim(3).expand([b, c, h, w])
        };
        let x = random([1, 1, 8, 8]);
        let whole = infer(&network, x.clone(), None);
        let slide = infer(&network, x, Some(SlideWindow { crop_size: [4, 4], stride: [4, 4] }));
        assert!(max_abs_diff(whole, slide) > 1e-3);
    }

    #[test]
    fn flip_tta_of_a_mirror_symmetric_network_equals_one_pass() {
        let network = |x: Tensor<4>| x.clone() * 3.0;
        let x = random([1, 4, 6, 6]);
        let single = softmax(network(x.clone()), 1);
        let tta = infer_tta(&network, x, None, &[1.0], true);
        assert!(max_abs_diff(single, tta) < 1e-6);
    }

    #[test]
    fn tta_averages_probabilities_over_scales_at_the_input_size() {
        let network = |x: Tensor<4>| x;
        let x = random([1, 3, 8, 8]);
        let tta = infer_tta(&network, x.clone(), None, &[0.5, 1.0], false);
        assert_eq!(tta.dims(), [1, 3, 8, 8]);
        let expected = (softmax(resize_bilinear(resize_bilinear(x.clone(), [4, 4]), [8, 8]), 1) + softmax(x, 1)).div_scalar(2.0);
        assert!(max_abs_diff(expected, tta) < 1e-6);
    }
}
