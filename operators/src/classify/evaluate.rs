//! How a classifier does on labeled sentences: accuracy, precision and
//! recall per class, and the confusion matrix (rows: the true label,
//! columns: the predicted one).

use serde_json::{json, Value};

#[derive(Clone, Debug)]
pub struct Evaluation {
    labels: Vec<String>,
    /// `confusion[truth][predicted]`.
    confusion: Vec<Vec<u64>>,
}

impl Evaluation {
    /// An empty tally over `labels` (a prediction outside them gets a column
    /// of its own when first seen).
    pub fn new(labels: &[String]) -> Self {
        Evaluation {
            labels: labels.to_vec(),
            confusion: vec![vec![0; labels.len()]; labels.len()],
        }
    }

    fn index(&mut self, label: &str) -> usize {
        if let Some(i) = self.labels.iter().position(|l| l == label) {
            return i;
        }
        self.labels.push(label.to_owned());
        for row in &mut self.confusion {
            row.push(0);
        }
        self.confusion.push(vec![0; self.labels.len()]);
        self.labels.len() - 1
    }

    pub fn add(&mut self, truth: &str, predicted: &str) {
        let t = self.index(truth);
        let p = self.index(predicted);
        self.confusion[t][p] += 1;
    }

    pub fn total(&self) -> u64 {
        self.confusion.iter().flatten().sum()
    }

    pub fn accuracy(&self) -> f64 {
        let right: u64 = (0..self.labels.len()).map(|i| self.confusion[i][i]).sum();
        right as f64 / self.total().max(1) as f64
    }

    /// Of the sentences predicted `i`, the share that are `i`.
    pub fn precision(&self, i: usize) -> Option<f64> {
        let predicted: u64 = self.confusion.iter().map(|row| row[i]).sum();
        (predicted > 0).then(|| self.confusion[i][i] as f64 / predicted as f64)
    }

    /// Of the sentences that are `i`, the share predicted `i`.
    pub fn recall(&self, i: usize) -> Option<f64> {
        let actual: u64 = self.confusion[i].iter().sum();
        (actual > 0).then(|| self.confusion[i][i] as f64 / actual as f64)
    }

    pub fn to_json(&self) -> Value {
        let per_class: Vec<Value> = (0..self.labels.len())
            .map(|i| {
                json!({"label": self.labels[i], "precision": self.precision(i),
                       "recall": self.recall(i), "support": self.confusion[i].iter().sum::<u64>()})
            })
            .collect();
        json!({"total": self.total(), "accuracy": self.accuracy(), "per_class": per_class,
               "labels": self.labels, "confusion": self.confusion})
    }

    /// A plain-text report: accuracy, a precision/recall table, the matrix.
    pub fn render(&self) -> String {
        let pct = |x: Option<f64>| x.map_or("-".into(), |x| format!("{:.3}", x));
        let width = self
            .labels
            .iter()
            .map(String::len)
            .max()
            .unwrap_or(5)
            .max(9);
        let mut out = format!(
            "accuracy {:.3} ({} of {})\n\n{:<width$} {:>9} {:>9} {:>7}\n",
            self.accuracy(),
            (0..self.labels.len())
                .map(|i| self.confusion[i][i])
                .sum::<u64>(),
            self.total(),
            "class",
            "precision",
            "recall",
            "support"
        );
        for (i, l) in self.labels.iter().enumerate() {
            out.push_str(&format!(
                "{l:<width$} {:>9} {:>9} {:>7}\n",
                pct(self.precision(i)),
                pct(self.recall(i)),
                self.confusion[i].iter().sum::<u64>()
            ));
        }
        out.push_str(&format!(
            "\nconfusion (rows: true, columns: predicted)\n{:<width$}",
            ""
        ));
        for l in &self.labels {
            out.push_str(&format!(" {:>9}", truncate(l, 9)));
        }
        out.push('\n');
        for (i, l) in self.labels.iter().enumerate() {
            out.push_str(&format!("{l:<width$}"));
            for n in &self.confusion[i] {
                out.push_str(&format!(" {n:>9}"));
            }
            out.push('\n');
        }
        out
    }
}

fn truncate(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tallies_and_reports() {
        let labels: Vec<String> = ["A", "B"].iter().map(|s| s.to_string()).collect();
        let mut e = Evaluation::new(&labels);
        for (t, p) in [("A", "A"), ("A", "B"), ("B", "B"), ("B", "B"), ("A", "C")] {
            e.add(t, p);
        }
        assert_eq!(e.total(), 5);
        assert!((e.accuracy() - 0.6).abs() < 1e-12);
        assert_eq!(e.precision(1), Some(2.0 / 3.0));
        assert_eq!(e.recall(0), Some(1.0 / 3.0));
        assert_eq!(e.precision(2), Some(0.0), "C predicted once, wrongly");
        assert_eq!(e.recall(2), None, "no sentence is truly C");
        let text = e.render();
        assert!(text.starts_with("accuracy 0.600 (3 of 5)"), "{text}");
        assert_eq!(e.to_json()["confusion"][0], json!([1, 1, 1]));
    }
}
