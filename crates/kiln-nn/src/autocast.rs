//! Mixed precision as PyTorch's autocast does it: inside [`autocast`], the matrix products and
//! convolutions of Kiln's layers ([`crate::fused`], the attention products) cast their operands
//! to the low precision, compute there, and hand their result back in f32; everything else
//! (residual sums, normalisations, softmax, activations, the loss) stays in f32. burn has no
//! autocast (burn issue #5696), so this is Kiln's: a per-thread setting, as PyTorch's is, so
//! data-parallel ranks on threads each have their own.
//!
//! Weights stay f32: each product casts its weight inside the autodiff graph, so the weight's
//! gradient comes back in f32 through the cast.

use std::cell::Cell;

use burn::prelude::*;
use burn::tensor::{DType, FloatDType};

thread_local! {
    static COMPUTE: Cell<Option<FloatDType>> = const { Cell::new(None) };
}

/// Runs `f` with the products in `dtype` (f32: as without autocast), restoring the previous
/// setting afterwards, also when `f` panics.
pub fn autocast<R>(dtype: FloatDType, f: impl FnOnce() -> R) -> R {
    struct Restore(Option<FloatDType>);
    impl Drop for Restore {
        fn drop(&mut self) {
            COMPUTE.with(|c| c.set(self.0));
        }
    }
    let low = (dtype != FloatDType::F32).then_some(dtype);
    let _restore = Restore(COMPUTE.with(|c| c.replace(low)));
    f()
}

/// The dtype products compute in on this thread, when [`autocast`] lowered it.
pub fn product_dtype() -> Option<FloatDType> {
    COMPUTE.with(Cell::get)
}

/// An operand of a product: cast to the autocast dtype when one is set.
pub(crate) fn operand<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    match product_dtype() {
        Some(dtype) => x.cast(dtype),
        None => x,
    }
}

/// A product's result, back in f32 (nothing to do outside [`autocast`]).
pub(crate) fn result<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    x.cast(DType::F32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_setting_is_scoped_and_restored_after_a_panic() {
        assert_eq!(product_dtype(), None);
        autocast(FloatDType::BF16, || {
            assert_eq!(product_dtype(), Some(FloatDType::BF16));
            autocast(FloatDType::F32, || assert_eq!(product_dtype(), None));
            assert_eq!(product_dtype(), Some(FloatDType::BF16));
        });
        let _ = std::panic::catch_unwind(|| autocast(FloatDType::BF16, || panic!("inside")));
        assert_eq!(product_dtype(), None);
        // another thread has its own setting
        autocast(FloatDType::BF16, || std::thread::spawn(|| assert_eq!(product_dtype(), None)).join().unwrap());
    }
}
