//! Helpers the unit tests share.

/// A tensor's values as `f32`, for the unit tests.
pub(crate) fn test_values<const D: usize>(t: burn::prelude::Tensor<D>) -> Vec<f32> {
    t.into_data().try_to_vec::<f32>().unwrap()
}
