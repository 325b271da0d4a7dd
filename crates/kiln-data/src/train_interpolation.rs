//! The resampling filter of a training transform, as timm names it: its own file because both
//! the train transform (`augment.rs`) and RandAugment (`rand_augment.rs`) pick one.

use serde::de::{self, Deserializer, EnumAccess, VariantAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};

use crate::{DataError, Interpolation, Rng};

/// The resampling filter of a training transform: timm's `'random'` (bilinear or bicubic, drawn
/// per call) or one fixed filter. Serialised as its timm name, one of [`Self::NAMES`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrainInterpolation {
    /// timm's `_RANDOM_INTERPOLATION`: bilinear or bicubic with equal chance, per call.
    Random,
    /// Always this filter.
    Fixed(Interpolation),
}

impl TrainInterpolation {
    /// timm's `--train-interpolation` names: `random`, then every filter of [`Interpolation::ALL`].
    pub const NAMES: [&'static str; 1 + Interpolation::ALL.len()] = {
        let mut names = ["random"; 1 + Interpolation::ALL.len()];
        let mut i = 0;
        while i < Interpolation::ALL.len() {
            names[i + 1] = Interpolation::ALL[i].timm_name();
            i += 1;
        }
        names
    };

    /// Position of the name in [`Self::NAMES`].
    fn name_index(self) -> usize {
        match self {
            TrainInterpolation::Random => 0,
            TrainInterpolation::Fixed(f) => 1 + Interpolation::ALL.iter().position(|&g| g == f).expect("every filter is in ALL"),
        }
    }

    /// The value named `Self::NAMES[index]`.
    fn from_name_index(index: usize) -> Self {
        match index {
            0 => TrainInterpolation::Random,
            i => TrainInterpolation::Fixed(Interpolation::ALL[i - 1]),
        }
    }

    /// Parses timm's `train_interpolation`: `"random"` or a filter name ([`Interpolation::from_timm`]).
    ///
    /// # Errors
    /// [`DataError::UnknownInterpolation`] for any other name.
    pub fn from_timm(name: &str) -> Result<Self, DataError> {
        if name.trim().eq_ignore_ascii_case("random") {
            Ok(TrainInterpolation::Random)
        } else {
            Interpolation::from_timm(name).map(TrainInterpolation::Fixed)
        }
    }

    /// The filter for one call (one draw from `rng` when random).
    pub fn pick(self, rng: &mut Rng) -> Interpolation {
        match self {
            TrainInterpolation::Random => {
                if rng.below(2) == 0 {
                    Interpolation::Bilinear
                } else {
                    Interpolation::Bicubic
                }
            }
            TrainInterpolation::Fixed(f) => f,
        }
    }
}

// Written out rather than derived because `Fixed` carries a filter, while the TOML spells every
// value as one flat name; this is what `#[derive]` on a unit-only enum of `NAMES` would do, so
// a config's unknown value is reported as "unknown variant `x`, expected one of `random`, ...".
impl Serialize for TrainInterpolation {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let index = self.name_index();
        serializer.serialize_unit_variant("TrainInterpolation", index as u32, Self::NAMES[index])
    }
}

impl<'de> Deserialize<'de> for TrainInterpolation {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        /// A variant name, read as serde reads an enum's.
        struct Name(TrainInterpolation);
        impl<'de> Deserialize<'de> for Name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                deserializer.deserialize_identifier(NameVisitor)
            }
        }
        struct NameVisitor;
        impl Visitor<'_> for NameVisitor {
            type Value = Name;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("variant identifier")
            }
            fn visit_str<E: de::Error>(self, name: &str) -> Result<Name, E> {
                match TrainInterpolation::NAMES.iter().position(|&n| n == name) {
                    Some(index) => Ok(Name(TrainInterpolation::from_name_index(index))),
                    None => Err(E::unknown_variant(name, &TrainInterpolation::NAMES)),
                }
            }
        }
        struct EnumVisitor;
        impl<'de> Visitor<'de> for EnumVisitor {
            type Value = TrainInterpolation;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("enum TrainInterpolation")
            }
            fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<TrainInterpolation, A::Error> {
                let (Name(value), variant) = data.variant()?;
                variant.unit_variant()?;
                Ok(value)
            }
        }
        deserializer.deserialize_enum("TrainInterpolation", &Self::NAMES, EnumVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn train_interpolation_reads_and_writes_timm_names() {
        for (i, name) in TrainInterpolation::NAMES.into_iter().enumerate() {
            let value = TrainInterpolation::from_name_index(i);
            assert_eq!(value, TrainInterpolation::from_timm(name).unwrap());
            assert_eq!(serde_json::to_string(&value).unwrap(), format!("\"{name}\""));
            assert_eq!(serde_json::from_str::<TrainInterpolation>(&format!("\"{name}\"")).unwrap(), value);
        }
        let err = serde_json::from_str::<TrainInterpolation>("\"bicubc\"").unwrap_err().to_string();
        let expected = "unknown variant `bicubc`, expected one of `random`, `nearest`, `bilinear`, `bicubic`, `box`, `hamming`, `lanczos`";
        assert!(err.starts_with(expected), "{err}");
    }
}
