//! Train/test splits that keep every class (tabular) or role (text)
//! represented on both sides.

use std::collections::BTreeMap;

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use super::{DataError, Dataset};

/// Splits `ds` into (train, test), deterministic for `seed`.
///
/// Tabular: stratified; each class contributes `round(count * fraction)` of
/// its rows, chosen at random, to the test side. Text: the same per role,
/// over documents, except that a role always keeps at least one document in
/// train (so a role with one document stays entirely in train). Rows and
/// documents keep their original order on both sides.
pub fn split_train_test(
    ds: &Dataset,
    test_fraction: f64,
    seed: u64,
) -> Result<(Dataset, Dataset), DataError> {
    if !(test_fraction > 0.0 && test_fraction < 1.0) {
        return Err(DataError::BadTestFraction(test_fraction));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    // Group keys are class ids or role names; BTreeMap keeps the iteration
    // (and so the random draws) in a fixed order.
    let groups: BTreeMap<String, Vec<usize>> = match ds {
        Dataset::Tabular(t) => group_by(t.labels.iter().map(|l| format!("{l:020}"))),
        Dataset::Text(c) => group_by(c.docs.iter().map(|d| d.role.clone())),
    };
    let mut is_test = vec![false; ds.len()];
    for members in groups.into_values() {
        let mut members = members;
        let mut take = (members.len() as f64 * test_fraction).round() as usize;
        if matches!(ds, Dataset::Text(_)) {
            take = take.min(members.len() - 1);
        }
        members.shuffle(&mut rng);
        for &i in &members[..take] {
            is_test[i] = true;
        }
    }
    let (test, train): (Vec<usize>, Vec<usize>) = (0..ds.len()).partition(|&i| is_test[i]);
    for (which, side) in [("train", &train), ("test", &test)] {
        if side.is_empty() {
            return Err(DataError::EmptySplit {
                which,
                examples: ds.len(),
                fraction: test_fraction,
            });
        }
    }
    Ok((subset(ds, &train), subset(ds, &test)))
}

fn group_by(keys: impl Iterator<Item = String>) -> BTreeMap<String, Vec<usize>> {
    let mut groups: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, k) in keys.enumerate() {
        groups.entry(k).or_default().push(i);
    }
    groups
}

pub(crate) fn subset(ds: &Dataset, indices: &[usize]) -> Dataset {
    match ds {
        Dataset::Tabular(t) => Dataset::Tabular(t.subset(indices)),
        Dataset::Text(c) => Dataset::Text(c.subset(indices)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::testutil::repo_data_dir;
    use crate::data::{TextCorpus, TextDoc, load_digits};

    #[test]
    fn digits_split_is_stratified_and_deterministic() {
        let ds = Dataset::Tabular(load_digits(&repo_data_dir()).unwrap());
        let (train, test) = split_train_test(&ds, 0.2, 42).unwrap();
        assert_eq!(train.len() + test.len(), 1797);
        assert!((355..=365).contains(&test.len()), "{}", test.len());
        let Dataset::Tabular(t) = &test else { panic!() };
        assert!(t.class_counts().iter().all(|c| (34..=38).contains(c)));
        let again = split_train_test(&ds, 0.2, 42).unwrap();
        assert_eq!(again.1, test);
        assert_ne!(split_train_test(&ds, 0.2, 7).unwrap().1, test);
    }

    #[test]
    fn text_roles_with_one_doc_stay_in_train() {
        let doc = |r: &str| TextDoc {
            role: r.into(),
            text: b"x".to_vec(),
        };
        let mut docs: Vec<_> = (0..10).map(|_| doc("many")).collect();
        docs.push(doc("solo"));
        let ds = Dataset::Text(TextCorpus { docs });
        let (train, test) = split_train_test(&ds, 0.3, 1).unwrap();
        let Dataset::Text(test) = test else { panic!() };
        let Dataset::Text(train) = train else {
            panic!()
        };
        assert_eq!(test.docs.len(), 3);
        assert!(test.docs.iter().all(|d| d.role == "many"));
        assert!(train.docs.iter().any(|d| d.role == "solo"));
    }

    #[test]
    fn bad_fraction_and_empty_side_error() {
        let ds = Dataset::Text(TextCorpus {
            docs: vec![TextDoc {
                role: "a".into(),
                text: b"x".to_vec(),
            }],
        });
        assert!(matches!(
            split_train_test(&ds, 1.5, 0),
            Err(DataError::BadTestFraction(_))
        ));
        let e = split_train_test(&ds, 0.5, 0).unwrap_err().to_string();
        assert!(e.contains("test split is empty"), "{e}");
    }
}
