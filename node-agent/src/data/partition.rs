//! Cutting one data set into several institutions' shares, for simulations
//! and demos. The non-IID schemes (`label`, `role`, `dirichlet`) mimic how
//! real institutions' data differ.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::str::FromStr;

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Gamma};

use super::split::subset;
use super::{DataError, Dataset, TextCorpus};

/// How to share examples among institutions.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Partition {
    /// Tabular: each institution gets whole classes (contiguous id ranges).
    Label,
    /// Text: each institution gets whole roles, balanced by bytes.
    Role,
    /// Either kind: a random, equal-sized deal.
    Iid,
    /// Tabular: per class, shares drawn from Dirichlet(alpha); small alpha
    /// means more skew.
    Dirichlet(f64),
}

impl FromStr for Partition {
    type Err = DataError;

    /// Accepts `label`, `role`, `iid` or `dirichlet:<alpha>` with alpha > 0.
    fn from_str(s: &str) -> Result<Self, DataError> {
        let bad = |reason: &str| DataError::BadPartition {
            input: s.to_string(),
            reason: reason.to_string(),
        };
        let t = s.trim().to_ascii_lowercase();
        match t.as_str() {
            "label" => Ok(Partition::Label),
            "role" => Ok(Partition::Role),
            "iid" => Ok(Partition::Iid),
            _ => {
                let Some(alpha) = t.strip_prefix("dirichlet:") else {
                    return Err(bad(
                        "expected `label`, `role`, `iid` or `dirichlet:<alpha>` (e.g. `dirichlet:0.5`)",
                    ));
                };
                let alpha: f64 = alpha
                    .trim()
                    .parse()
                    .map_err(|_| bad("dirichlet alpha is not a number"))?;
                if !(alpha > 0.0 && alpha.is_finite()) {
                    return Err(bad("dirichlet alpha must be > 0"));
                }
                Ok(Partition::Dirichlet(alpha))
            }
        }
    }
}

impl fmt::Display for Partition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Partition::Label => f.write_str("label"),
            Partition::Role => f.write_str("role"),
            Partition::Iid => f.write_str("iid"),
            Partition::Dirichlet(a) => write!(f, "dirichlet:{a}"),
        }
    }
}

/// Shares `ds` among `n` institutions, deterministic for `seed`. Within a
/// share, examples keep their original order. Every institution must end
/// up with at least one example.
pub fn partition(
    ds: &Dataset,
    n: usize,
    how: &Partition,
    seed: u64,
) -> Result<Vec<Dataset>, DataError> {
    if n == 0 {
        return Err(DataError::NoInstitutions);
    }
    if n > ds.len() {
        return Err(DataError::TooManyInstitutions {
            institutions: n,
            available: ds.len(),
            what: "examples",
        });
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let shares = match (how, ds) {
        (Partition::Label, Dataset::Tabular(t)) => by_label(&t.labels, n)?,
        (Partition::Role, Dataset::Text(c)) => by_role(c, n)?,
        (Partition::Iid, _) => iid(ds.len(), n, &mut rng),
        (Partition::Dirichlet(alpha), Dataset::Tabular(t)) => {
            dirichlet(&t.labels, n, *alpha, &mut rng)?
        }
        (how, ds) => {
            return Err(DataError::PartitionKind {
                partition: how.to_string(),
                needs: if *how == Partition::Role {
                    "text"
                } else {
                    "tabular"
                },
                actual: ds.kind(),
            });
        }
    };
    let hint = match how {
        Partition::Dirichlet(_) => " (try a larger dirichlet alpha or fewer institutions)",
        _ => "",
    };
    if let Some(index) = shares.iter().position(Vec::is_empty) {
        return Err(DataError::EmptyInstitution {
            index,
            institutions: n,
            hint,
        });
    }
    Ok(shares.iter().map(|s| subset(ds, s)).collect())
}

fn by_label(labels: &[i64], n: usize) -> Result<Vec<Vec<usize>>, DataError> {
    let mut classes: Vec<i64> = labels.to_vec();
    classes.sort_unstable();
    classes.dedup();
    let k = classes.len();
    if n > k {
        return Err(DataError::TooManyInstitutions {
            institutions: n,
            available: k,
            what: "classes",
        });
    }
    // The first k % n institutions take one class more: 10 classes over 3
    // institutions gives 4, 3, 3.
    let mut owner = HashMap::new();
    let mut next = 0;
    for inst in 0..n {
        let size = k / n + usize::from(inst < k % n);
        for &c in &classes[next..next + size] {
            owner.insert(c, inst);
        }
        next += size;
    }
    let mut shares = vec![Vec::new(); n];
    for (i, l) in labels.iter().enumerate() {
        shares[owner[l]].push(i);
    }
    Ok(shares)
}

fn by_role(c: &TextCorpus, n: usize) -> Result<Vec<Vec<usize>>, DataError> {
    let mut bytes: BTreeMap<&str, usize> = BTreeMap::new();
    for d in &c.docs {
        *bytes.entry(d.role.as_str()).or_default() += d.text.len();
    }
    if n > bytes.len() {
        return Err(DataError::TooManyInstitutions {
            institutions: n,
            available: bytes.len(),
            what: "roles",
        });
    }
    let mut roles: Vec<(&str, usize)> = bytes.into_iter().collect();
    roles.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let mut load = vec![0usize; n];
    let mut owner = HashMap::new();
    for (role, size) in roles {
        let inst = (0..n).min_by_key(|&i| (load[i], i)).unwrap_or(0);
        load[inst] += size;
        owner.insert(role, inst);
    }
    let mut shares = vec![Vec::new(); n];
    for (i, d) in c.docs.iter().enumerate() {
        shares[owner[d.role.as_str()]].push(i);
    }
    Ok(shares)
}

fn iid(len: usize, n: usize, rng: &mut ChaCha8Rng) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..len).collect();
    order.shuffle(rng);
    let mut shares = vec![Vec::new(); n];
    for (k, i) in order.into_iter().enumerate() {
        shares[k % n].push(i);
    }
    for s in &mut shares {
        s.sort_unstable();
    }
    shares
}

fn dirichlet(
    labels: &[i64],
    n: usize,
    alpha: f64,
    rng: &mut ChaCha8Rng,
) -> Result<Vec<Vec<usize>>, DataError> {
    let gamma = Gamma::new(alpha, 1.0).map_err(|e| DataError::BadPartition {
        input: Partition::Dirichlet(alpha).to_string(),
        reason: e.to_string(),
    })?;
    let mut by_class: BTreeMap<i64, Vec<usize>> = BTreeMap::new();
    for (i, l) in labels.iter().enumerate() {
        by_class.entry(*l).or_default().push(i);
    }
    let mut shares = vec![Vec::new(); n];
    for mut members in by_class.into_values() {
        members.shuffle(rng);
        // A Dirichlet draw is independent Gamma(alpha) draws, normalised.
        let draws: Vec<f64> = (0..n).map(|_| gamma.sample(rng)).collect();
        let total: f64 = draws.iter().sum();
        let mut cum = 0.0;
        let mut start = 0;
        for (inst, d) in draws.iter().enumerate() {
            cum += if total > 0.0 {
                d / total
            } else {
                1.0 / n as f64
            };
            let end = if inst + 1 == n {
                members.len()
            } else {
                ((cum * members.len() as f64).round() as usize).clamp(start, members.len())
            };
            shares[inst].extend_from_slice(&members[start..end]);
            start = end;
        }
    }
    for s in &mut shares {
        s.sort_unstable();
    }
    Ok(shares)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::testutil::repo_data_dir;
    use crate::data::{Tabular, TextDoc, load_digits};

    fn digits() -> Dataset {
        Dataset::Tabular(load_digits(&repo_data_dir()).unwrap())
    }

    fn tab(ds: &Dataset) -> &Tabular {
        match ds {
            Dataset::Tabular(t) => t,
            Dataset::Text(_) => panic!("not tabular"),
        }
    }

    #[test]
    fn parses_and_rejects() {
        assert_eq!("label".parse::<Partition>().unwrap(), Partition::Label);
        assert_eq!(" IID ".parse::<Partition>().unwrap(), Partition::Iid);
        assert_eq!(
            "dirichlet:0.5".parse::<Partition>().unwrap(),
            Partition::Dirichlet(0.5)
        );
        let e = "dirichlet:0".parse::<Partition>().unwrap_err().to_string();
        assert!(e.contains("dirichlet alpha must be > 0"), "{e}");
        let e = "dirichlet:x".parse::<Partition>().unwrap_err().to_string();
        assert!(e.contains("not a number"), "{e}");
        assert!("shards".parse::<Partition>().is_err());
    }

    #[test]
    fn label_gives_4_3_3_disjoint_classes() {
        let ds = digits();
        let parts = partition(&ds, 3, &Partition::Label, 0).unwrap();
        let present: Vec<Vec<usize>> = parts
            .iter()
            .map(|p| {
                let c = tab(p).class_counts();
                (0..10).filter(|i| c[*i] > 0).collect()
            })
            .collect();
        assert_eq!(
            present,
            vec![vec![0, 1, 2, 3], vec![4, 5, 6], vec![7, 8, 9]]
        );
        assert_eq!(parts.iter().map(Dataset::len).sum::<usize>(), ds.len());
        assert!(parts.iter().all(|p| tab(p).num_classes == 10));
        let e = partition(&ds, 11, &Partition::Label, 0).unwrap_err();
        assert!(
            e.to_string()
                .contains("11 institutions but only 10 classes")
        );
    }

    #[test]
    fn iid_and_dirichlet_cover_everything_once() {
        let ds = digits();
        for how in [Partition::Iid, Partition::Dirichlet(0.5)] {
            let parts = partition(&ds, 4, &how, 3).unwrap();
            assert_eq!(parts.iter().map(Dataset::len).sum::<usize>(), ds.len());
            assert_eq!(partition(&ds, 4, &how, 3).unwrap(), parts);
        }
        let e = partition(&ds, 50, &Partition::Dirichlet(0.001), 3).unwrap_err();
        assert!(e.to_string().contains("received no examples"), "{e}");
    }

    #[test]
    fn role_balances_bytes_and_checks_kinds() {
        let doc = |r: &str, len: usize| TextDoc {
            role: r.into(),
            text: vec![b'a'; len],
        };
        let ds = Dataset::Text(TextCorpus {
            docs: vec![
                doc("a", 50),
                doc("b", 30),
                doc("c", 25),
                doc("a", 10),
                doc("d", 5),
            ],
        });
        let parts = partition(&ds, 2, &Partition::Role, 0).unwrap();
        let sizes: Vec<usize> = parts
            .iter()
            .map(|p| match p {
                Dataset::Text(c) => c.total_bytes(),
                Dataset::Tabular(_) => 0,
            })
            .collect();
        assert_eq!(sizes, vec![60, 60]);
        let e = partition(&ds, 2, &Partition::Label, 0)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("needs tabular data, but the data set is text"),
            "{e}"
        );
        let e = partition(&digits(), 2, &Partition::Role, 0)
            .unwrap_err()
            .to_string();
        assert!(e.contains("needs text data"), "{e}");
        let e = partition(&ds, 0, &Partition::Iid, 0)
            .unwrap_err()
            .to_string();
        assert!(e.contains("at least 1"), "{e}");
        let e = partition(&ds, 6, &Partition::Iid, 0)
            .unwrap_err()
            .to_string();
        assert!(e.contains("6 institutions but only 5 examples"), "{e}");
    }
}
