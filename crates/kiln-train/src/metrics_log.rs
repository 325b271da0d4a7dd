//! `metrics.jsonl` and `metrics.csv` of a run directory, and the curves drawn from them.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{TrainError, io};


/// `metrics.jsonl` and `metrics.csv` of the run directory, appended line by line.
pub(crate) struct MetricsLog {
    jsonl: File,
    csv: File,
    jsonl_path: PathBuf,
    /// Every record of the run so far (a resumed run reads the earlier ones back), for the plots.
    records: Vec<serde_json::Value>,
    columns: Vec<&'static str>,
}

/// `metrics.csv` columns before the task's own metrics, and after them.
const CSV_LEADING: [&str; 6] = ["kind", "epoch", "step", "loss", "lr", "images_per_s"];
const CSV_TRAILING: [&str; 1] = ["time"];

impl MetricsLog {
    pub(crate) fn open(run_dir: &Path, append: bool, metrics: &[&'static str]) -> Result<Self, TrainError> {
        let columns: Vec<&'static str> = CSV_LEADING.iter().chain(metrics).chain(&CSV_TRAILING).copied().collect();
        let open = |name: &str| -> Result<(File, bool), TrainError> {
            let path = run_dir.join(name);
            let existed = append && path.exists();
            let file = OpenOptions::new().create(true).write(true).append(append).truncate(!append).open(&path).map_err(io(&path))?;
            Ok((file, existed))
        };
        let jsonl_path = run_dir.join("metrics.jsonl");
        let records = if append && jsonl_path.exists() {
            let text = fs::read_to_string(&jsonl_path).map_err(io(&jsonl_path))?;
            text.lines().filter_map(|line| serde_json::from_str(line).ok()).collect()
        } else {
            Vec::new()
        };
        let (jsonl, _) = open("metrics.jsonl")?;
        let (mut csv, existed) = open("metrics.csv")?;
        if !existed {
            writeln!(csv, "{}", columns.join(",")).map_err(io(&run_dir.join("metrics.csv")))?;
        }
        Ok(MetricsLog { jsonl, csv, jsonl_path, records, columns })
    }

    pub(crate) fn write(&mut self, record: &serde_json::Value) -> Result<(), TrainError> {
        let mut record = record.clone();
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
        record["time"] = now.into();
        writeln!(self.jsonl, "{record}").map_err(io(&self.jsonl_path))?;
        let cells: Vec<String> = self
            .columns
            .iter()
            .map(|c| match &record[*c] {
                serde_json::Value::Null => String::new(),
                serde_json::Value::String(s) => s.clone(),
                v => v.to_string(),
            })
            .collect();
        writeln!(self.csv, "{}", cells.join(",")).map_err(io(&self.jsonl_path))?;
        self.records.push(record);
        Ok(())
    }

    /// `loss.png`, `accuracy.png` and `lr.png` in `run_dir`, redrawn from every record so far.
    pub(crate) fn plot(&self, run_dir: &Path) -> Result<(), TrainError> {
        crate::plot::write_curves(&self.records, run_dir).map(|_| ()).map_err(io(run_dir))
    }
}
