//! Tabular data from CSV (optionally gzip-compressed).
//!
//! Conventions, chosen so any numeric CSV works without a schema:
//! - a header is present when some cell of the first row is not a number;
//!   without one, columns are named by their 0-based index;
//! - the label column is the last one unless named (by header name or
//!   0-based index);
//! - labels are class ids: non-negative integers used as they are. String
//!   labels are refused rather than mapped, because a mapping derived from
//!   one institution's file (sorted names) would silently disagree with
//!   another institution's that lacks a class;
//! - every other cell must be a finite number.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use flate2::read::GzDecoder;

use super::{DataError, Tabular, feature_stats};

/// Class ids above this are refused: the model's output layer has one unit
/// per class id, so a stray large id would allocate an absurd layer.
pub const MAX_CLASS_ID: i64 = 65_535;

/// Loads `path` (`.csv` or `.csv.gz`); see the module docs for conventions.
pub fn load_csv(path: &Path, label_column: Option<&str>) -> Result<Tabular, DataError> {
    let file = File::open(path).map_err(|e| DataError::io(path, e))?;
    let reader: Box<dyn Read> = if path.extension().is_some_and(|e| e == "gz") {
        Box::new(GzDecoder::new(BufReader::new(file)))
    } else {
        Box::new(BufReader::new(file))
    };
    let mut rdr = ::csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .trim(::csv::Trim::All)
        .from_reader(reader);

    let mut records = rdr.records();
    let mut next = || -> Result<Option<(u64, ::csv::StringRecord)>, DataError> {
        match records.next() {
            None => Ok(None),
            Some(Ok(r)) => Ok(Some((r.position().map_or(0, |p| p.line()), r))),
            Some(Err(e)) => Err(csv_error(path, e)),
        }
    };

    let Some((first_line, first)) = next()? else {
        return Err(no_examples(path));
    };
    let columns = first.len();
    let has_header = first.iter().any(|c| c.parse::<f64>().is_err());
    let names: Vec<String> = if has_header {
        first.iter().map(str::to_string).collect()
    } else {
        (0..columns).map(|i| i.to_string()).collect()
    };
    if columns < 2 {
        return Err(DataError::TooFewColumns {
            path: path.to_path_buf(),
            columns,
        });
    }
    let label_idx = resolve_label(path, &names, has_header, label_column)?;

    let mut parser = RowParser {
        path,
        names: &names,
        label_idx,
        features: Vec::new(),
        labels: Vec::new(),
    };
    if !has_header {
        parser.push(first_line, &first)?;
    }
    while let Some((line, record)) = next()? {
        parser.push(line, &record)?;
    }
    let RowParser {
        features, labels, ..
    } = parser;
    if labels.is_empty() {
        return Err(no_examples(path));
    }
    let num_features = columns - 1;
    let num_classes = labels.iter().copied().max().unwrap_or(0) as usize + 1;
    let feature_names = names
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != label_idx)
        .map(|(_, n)| n.clone())
        .collect();
    let (feature_offset, feature_scale) = feature_stats(&features, num_features);
    Ok(Tabular {
        feature_offset,
        feature_scale,
        features,
        labels,
        num_features,
        num_classes,
        feature_names,
    })
}

struct RowParser<'a> {
    path: &'a Path,
    names: &'a [String],
    label_idx: usize,
    features: Vec<f32>,
    labels: Vec<i64>,
}

impl RowParser<'_> {
    fn push(&mut self, line: u64, record: &::csv::StringRecord) -> Result<(), DataError> {
        if record.len() != self.names.len() {
            return Err(DataError::RaggedRow {
                path: self.path.to_path_buf(),
                line,
                fields: record.len(),
                expected: self.names.len(),
            });
        }
        for (i, cell) in record.iter().enumerate() {
            if i == self.label_idx {
                let label = cell
                    .parse::<i64>()
                    .ok()
                    .filter(|l| (0..=MAX_CLASS_ID).contains(l))
                    .ok_or_else(|| DataError::BadLabel {
                        path: self.path.to_path_buf(),
                        line,
                        column: self.names[i].clone(),
                        value: cell.to_string(),
                    })?;
                self.labels.push(label);
            } else {
                let v = cell
                    .parse::<f32>()
                    .ok()
                    .filter(|v| v.is_finite())
                    .ok_or_else(|| DataError::NotANumber {
                        path: self.path.to_path_buf(),
                        line,
                        column: self.names[i].clone(),
                        value: cell.to_string(),
                    })?;
                self.features.push(v);
            }
        }
        Ok(())
    }
}

fn resolve_label(
    path: &Path,
    names: &[String],
    has_header: bool,
    label_column: Option<&str>,
) -> Result<usize, DataError> {
    let Some(wanted) = label_column else {
        return Ok(names.len() - 1);
    };
    if has_header && let Some(i) = names.iter().position(|n| n == wanted) {
        return Ok(i);
    }
    match wanted.parse::<usize>() {
        Ok(i) if i < names.len() => Ok(i),
        _ => Err(DataError::LabelColumnNotFound {
            path: path.to_path_buf(),
            column: wanted.to_string(),
            columns: if has_header {
                names.join(", ")
            } else {
                format!("0..{} (the file has no header)", names.len() - 1)
            },
        }),
    }
}

fn csv_error(path: &Path, e: ::csv::Error) -> DataError {
    let line = e.position().map_or(0, |p| p.line());
    match e.into_kind() {
        ::csv::ErrorKind::Io(source) => DataError::io(path, source),
        kind => DataError::Csv {
            path: path.to_path_buf(),
            line,
            message: format!("{kind:?}"),
        },
    }
}

fn no_examples(path: &Path) -> DataError {
    DataError::NoExamples {
        what: format!("`{}`", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, body: &str) -> std::path::PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, body).unwrap();
        p
    }

    #[test]
    fn header_names_and_label_by_name_or_index() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "a.csv", "x1,y,x2\n1,0,2\n3,2,-4\n");
        let t = load_csv(&p, Some("y")).unwrap();
        assert_eq!(t.labels, vec![0, 2]);
        assert_eq!(t.features, vec![1.0, 2.0, 3.0, -4.0]);
        assert_eq!(t.feature_names, vec!["x1", "x2"]);
        assert_eq!(t.num_classes, 3);
        assert_eq!(t.feature_offset, vec![2.0, -1.0]);
        assert_eq!(t.feature_scale, vec![1.0, 3.0]);
        assert_eq!(load_csv(&p, Some("1")).unwrap(), t);
    }

    #[test]
    fn no_header_defaults_to_last_column() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "a.csv", "1,2,1\n0,0,0\n");
        let t = load_csv(&p, None).unwrap();
        assert_eq!(t.labels, vec![1, 0]);
        assert_eq!(t.num_features, 2);
        assert_eq!(t.feature_offset, vec![0.5, 1.0]);
        assert_eq!(t.feature_scale, vec![0.5, 1.0]);
    }

    #[test]
    fn errors_name_file_line_column_and_value() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "r.csv", "a,b,c\n1,2,0\n1,2\n");
        let e = load_csv(&p, None).unwrap_err().to_string();
        assert!(
            e.contains("r.csv") && e.contains("line 3 has 2 fields, expected 3"),
            "{e}"
        );

        let p = write(dir.path(), "n.csv", "x1,x2,y\n1,2,0\n1,abc,1\n");
        let e = load_csv(&p, None).unwrap_err().to_string();
        assert!(
            e.contains("line 3, column `x2`: `abc` is not a number"),
            "{e}"
        );

        let p = write(dir.path(), "l.csv", "x1,x2,y\n1,2,cat\n");
        let e = load_csv(&p, None).unwrap_err().to_string();
        assert!(e.contains("`cat` is not a class id"), "{e}");

        let p = write(dir.path(), "f.csv", "x1,x2,y\n1,2,0\n");
        let e = load_csv(&p, Some("foo")).unwrap_err().to_string();
        assert!(
            e.contains("label column `foo` not found; columns are: x1, x2, y"),
            "{e}"
        );

        let p = write(dir.path(), "e.csv", "x1,x2,y\n");
        let e = load_csv(&p, None).unwrap_err().to_string();
        assert!(e.contains("no examples"), "{e}");

        let p = write(dir.path(), "inf.csv", "1,inf,0\n");
        let e = load_csv(&p, None).unwrap_err().to_string();
        assert!(e.contains("`inf` is not a number"), "{e}");

        let e = load_csv(&dir.path().join("missing.csv"), None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing.csv"), "{e}");
    }

    #[test]
    fn gzip_is_read_and_garbage_gzip_errors() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.csv.gz");
        let mut enc =
            flate2::write::GzEncoder::new(File::create(&p).unwrap(), flate2::Compression::fast());
        enc.write_all(b"1,2,1\n3,4,0\n").unwrap();
        enc.finish().unwrap();
        assert_eq!(load_csv(&p, None).unwrap().len(), 2);

        let g = write(dir.path(), "bad.csv.gz", "not gzip at all");
        assert!(load_csv(&g, None).is_err());
    }
}
