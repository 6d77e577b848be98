//! Data as institutions bring it: CSV tables and folders of text files read
//! from disk, and the sealed data set format the vault holds.

use modelpub_node_agent::data::{self, Dataset, TextCorpus, TextDoc};

use crate::Target;

const CSV: &str = "sepal_length,sepal_width,species\n5.1,3.5,0\n4.9,3.0,0\n6.2,2.9,1\n5.9,3.0,2\n";

pub struct CsvFiles {
    dir: tempfile::TempDir,
}

impl CsvFiles {
    pub fn new() -> anyhow::Result<Self> {
        Ok(Self {
            dir: tempfile::tempdir()?,
        })
    }
}

impl Target for CsvFiles {
    fn name(&self) -> &'static str {
        "csv"
    }

    fn seeds(&self) -> Vec<Vec<u8>> {
        vec![CSV.as_bytes().to_vec()]
    }

    fn run(&mut self, input: &[u8]) -> Result<(), String> {
        let path = self.dir.path().join("table.csv");
        std::fs::write(&path, input).map_err(|e| e.to_string())?;
        let last = data::load_csv(&path, None).map(|_| ());
        let named = data::load_csv(&path, Some("species")).map(|_| ());
        last.and(named).map_err(|e| e.to_string())
    }
}

pub struct TextFiles {
    dir: tempfile::TempDir,
}

impl TextFiles {
    pub fn new() -> anyhow::Result<Self> {
        Ok(Self {
            dir: tempfile::tempdir()?,
        })
    }
}

impl Target for TextFiles {
    fn name(&self) -> &'static str {
        "text"
    }

    fn seeds(&self) -> Vec<Vec<u8>> {
        vec![b"To be, or not to be, that is the question:\nWhether 'tis nobler in the mind to suffer\n".to_vec()]
    }

    fn run(&mut self, input: &[u8]) -> Result<(), String> {
        std::fs::write(self.dir.path().join("hamlet.txt"), input).map_err(|e| e.to_string())?;
        data::load_text_dir(self.dir.path())
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

pub struct SealedDatasets {
    seeds: Vec<Vec<u8>>,
}

impl SealedDatasets {
    pub fn new() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("table.csv");
        std::fs::write(&path, CSV)?;
        let table = Dataset::Tabular(data::load_csv(&path, Some("species"))?);
        let text = Dataset::Text(TextCorpus {
            docs: vec![
                TextDoc {
                    role: "HAMLET".into(),
                    text: b"To be, or not to be".to_vec(),
                },
                TextDoc {
                    role: "OPHELIA".into(),
                    text: b"Good my lord".to_vec(),
                },
            ],
        });
        Ok(Self {
            seeds: vec![data::encode_dataset(&table), data::encode_dataset(&text)],
        })
    }
}

impl Target for SealedDatasets {
    fn name(&self) -> &'static str {
        "sealed-dataset"
    }

    fn seeds(&self) -> Vec<Vec<u8>> {
        self.seeds.clone()
    }

    fn run(&mut self, input: &[u8]) -> Result<(), String> {
        data::decode_dataset(input)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}
