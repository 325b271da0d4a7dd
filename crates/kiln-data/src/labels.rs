//! ImageNet-1k class names, in the order of timm's 1000-class heads.

const LABELS: &str = include_str!("../data/imagenet1k_labels.txt");
const WNIDS: &str = include_str!("../data/imagenet1k_wnids.txt");

/// The 1000 ImageNet-1k class descriptions (WordNet lemmas, e.g. `"tench, Tinca tinca"`), indexed
/// by class, as timm's `ImageNetInfo().index_to_description(i)` gives them.
pub fn imagenet1k_labels() -> Vec<&'static str> {
    LABELS.lines().collect()
}

/// The 1000 ImageNet-1k WordNet ids (e.g. `"n01440764"`), indexed by class.
pub fn imagenet1k_wnids() -> Vec<&'static str> {
    WNIDS.lines().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousand_classes_in_timm_order() {
        let (labels, wnids) = (imagenet1k_labels(), imagenet1k_wnids());
        assert_eq!((labels.len(), wnids.len()), (1000, 1000));
        assert_eq!((labels[0], wnids[0]), ("tench, Tinca tinca", "n01440764"));
        assert_eq!(labels[285], "Egyptian cat");
        assert!(labels.iter().all(|l| !l.is_empty() && l.trim() == *l));
        assert!(wnids.iter().all(|w| w.len() == 9 && w.starts_with('n')));
    }
}
