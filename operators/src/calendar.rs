//! The event calendar seasonality is measured against. Events recur every year
//! on their month and day; an event applies to signals of its locale, or to all
//! signals when it has none.

use chrono::{DateTime, Datelike, NaiveDate, Utc};

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CalendarEvent {
    pub date: NaiveDate,
    pub name: String,
    pub locale: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Calendar {
    events: Vec<CalendarEvent>,
}

#[derive(Debug, thiserror::Error)]
pub enum CalendarError {
    #[error("calendar line {line}: {reason} (expected `date,name,locale,topics` with an ISO date such as 2024-12-25)")]
    Row { line: u64, reason: String },
}

impl Calendar {
    pub fn new(events: Vec<CalendarEvent>) -> Self {
        Calendar { events }
    }

    /// Parses the calendar CSV (`date,name,locale,topics`, with a header row).
    pub fn parse_csv(bytes: &[u8]) -> Result<Calendar, CalendarError> {
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(true)
            .flexible(true)
            .from_reader(bytes);
        let mut events = Vec::new();
        for (i, row) in reader.records().enumerate() {
            let line = i as u64 + 2;
            let row = row.map_err(|e| CalendarError::Row {
                line,
                reason: e.to_string(),
            })?;
            let field = |k: usize| row.get(k).map(str::trim).unwrap_or("");
            let date = NaiveDate::parse_from_str(field(0), "%Y-%m-%d").map_err(|e| {
                CalendarError::Row {
                    line,
                    reason: format!("bad date {:?}: {e}", field(0)),
                }
            })?;
            let locale = Some(field(2)).filter(|l| !l.is_empty()).map(str::to_owned);
            events.push(CalendarEvent {
                date,
                name: field(1).to_owned(),
                locale,
            });
        }
        Ok(Calendar { events })
    }

    pub fn events(&self) -> &[CalendarEvent] {
        &self.events
    }

    /// Days from `at` to the nearest event that applies to `locale` (either
    /// direction, fractional), or `None` when no event applies.
    pub fn days_to_nearest(&self, at: DateTime<Utc>, locale: Option<&str>) -> Option<f64> {
        let year = at.year();
        self.events
            .iter()
            .filter(|e| e.locale.is_none() || e.locale.as_deref() == locale)
            .flat_map(|e| {
                (year - 1..=year + 1).filter_map(move |y| {
                    NaiveDate::from_ymd_opt(y, e.date.month(), e.date.day())
                        .or_else(|| NaiveDate::from_ymd_opt(y, 2, 28))
                })
            })
            .map(|d| {
                // An event occupies its whole day.
                let start = d.and_hms_opt(0, 0, 0).expect("midnight").and_utc();
                let end = start + chrono::Duration::days(1);
                let secs = if at < start {
                    (start - at).num_seconds()
                } else if at >= end {
                    (at - end).num_seconds()
                } else {
                    0
                };
                secs as f64 / 86_400.0
            })
            .min_by(f64::total_cmp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    const CSV: &str = "date,name,locale,topics\n2024-12-25,Christmas,,xmas\n2024-07-04,Independence Day,en-US,usa\n";

    #[test]
    fn nearest_event_by_locale_and_year() {
        let c = Calendar::parse_csv(CSV.as_bytes()).unwrap();
        let at = Utc.with_ymd_and_hms(2025, 12, 20, 0, 0, 0).unwrap();
        assert_eq!(c.days_to_nearest(at, None), Some(5.0));
        let july = Utc.with_ymd_and_hms(2031, 7, 4, 12, 0, 0).unwrap();
        assert_eq!(c.days_to_nearest(july, Some("en-US")), Some(0.0));
        assert!(c.days_to_nearest(july, Some("en-GB")).unwrap() > 100.0);
        let jan = Utc.with_ymd_and_hms(2025, 1, 2, 0, 0, 0).unwrap();
        assert_eq!(c.days_to_nearest(jan, None), Some(7.0));
    }

    #[test]
    fn bad_rows_say_where() {
        let err = Calendar::parse_csv(b"date,name\n2024-13-01,x\n").unwrap_err();
        assert!(err.to_string().contains("line 2"), "{err}");
    }
}
