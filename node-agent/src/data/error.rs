use std::path::PathBuf;

/// Everything that can be wrong with a data file, a split or a partition.
/// Each message names the file, line, column or value at fault.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("cannot read `{}`: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("`{}` line {line}: {message}", path.display())]
    Csv {
        path: PathBuf,
        line: u64,
        message: String,
    },
    #[error("`{}` line {line} has {fields} fields, expected {expected}", path.display())]
    RaggedRow {
        path: PathBuf,
        line: u64,
        fields: usize,
        expected: usize,
    },
    #[error("`{}` line {line}, column `{column}`: `{value}` is not a number", path.display())]
    NotANumber {
        path: PathBuf,
        line: u64,
        column: String,
        value: String,
    },
    #[error(
        "`{}` line {line}, column `{column}`: `{value}` is not a class id (a non-negative integer)",
        path.display()
    )]
    BadLabel {
        path: PathBuf,
        line: u64,
        column: String,
        value: String,
    },
    #[error("`{}`: label column `{column}` not found; columns are: {columns}", path.display())]
    LabelColumnNotFound {
        path: PathBuf,
        column: String,
        columns: String,
    },
    #[error("`{}` has {columns} column(s); it needs at least one feature column and a label column", path.display())]
    TooFewColumns { path: PathBuf, columns: usize },
    #[error("{what}: no examples")]
    NoExamples { what: String },
    #[error("`{}`: no text (no non-empty file found)", path.display())]
    NoText { path: PathBuf },
    #[error("test fraction must be between 0 and 1 (exclusive), got {0}")]
    BadTestFraction(f64),
    #[error("the {which} split is empty ({examples} examples, test fraction {fraction})")]
    EmptySplit {
        which: &'static str,
        examples: usize,
        fraction: f64,
    },
    #[error("invalid partition `{input}`: {reason}")]
    BadPartition { input: String, reason: String },
    #[error("the number of institutions must be at least 1")]
    NoInstitutions,
    #[error("{institutions} institutions but only {available} {what}")]
    TooManyInstitutions {
        institutions: usize,
        available: usize,
        what: &'static str,
    },
    #[error("partition `{partition}` needs {needs} data, but the data set is {actual}")]
    PartitionKind {
        partition: String,
        needs: &'static str,
        actual: &'static str,
    },
    #[error("institution {index} of {institutions} received no examples{hint}")]
    EmptyInstitution {
        index: usize,
        institutions: usize,
        hint: &'static str,
    },
    #[error("cannot decode data set: {0}")]
    Decode(String),
}

impl DataError {
    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        DataError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}
