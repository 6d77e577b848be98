//! The handwritten digits demo data set shipped in the repository.

use std::path::Path;

use super::{DataError, Tabular, load_csv};

/// Loads `<repo_data_dir>/digits.csv.gz`: 1,797 rows of 64 pixels (0..16)
/// and the digit as the last column, no header.
pub fn load_digits(repo_data_dir: &Path) -> Result<Tabular, DataError> {
    load_csv(&repo_data_dir.join("digits.csv.gz"), None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::testutil::repo_data_dir;

    #[test]
    fn digits_shape() {
        let t = load_digits(&repo_data_dir()).unwrap();
        assert_eq!(t.len(), 1797);
        assert_eq!(t.num_features, 64);
        assert_eq!(t.num_classes, 10);
        assert!(t.feature_scale.iter().all(|s| *s > 0.0 && *s <= 16.0));
        assert!(t.feature_offset.iter().all(|o| (0.0..=16.0).contains(o)));
        assert!(t.class_counts().iter().all(|c| *c > 150));
    }
}
