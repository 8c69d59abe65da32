//! The last hour of the head's own Prometheus metrics, for the dashboard's charts: every
//! `SAMPLE_PERIOD` the head renders its metrics text (as `GET /metrics` serves it), parses the
//! exposition format and appends each series' value. Memory is bounded: `SAMPLES_KEPT` points
//! per series and at most `MAX_SERIES` series (series beyond that are counted, not kept).
//! Histogram buckets (`*_bucket` series) are not kept at all: the charts draw a histogram's
//! `_sum` and `_count`, and its buckets would use up the series cap.

use super::Head;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How often the metrics are sampled.
pub(crate) const SAMPLE_PERIOD: Duration = Duration::from_secs(10);
/// Points kept per series: an hour at `SAMPLE_PERIOD`.
pub(crate) const SAMPLES_KEPT: usize = 360;
/// Series kept at most.
pub(crate) const MAX_SERIES: usize = 500;
/// Longest HELP text kept.
const MAX_HELP: usize = 300;

/// One series: a metric name and its labels, in the order the exposition gives them.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct SeriesKey {
    pub(crate) name: String,
    pub(crate) labels: Vec<(String, String)>,
}

impl SeriesKey {
    /// The labels as `k="v", ...` (values as given, unescaped), or empty.
    pub(crate) fn label_text(&self) -> String {
        self.labels
            .iter()
            .map(|(key, value)| format!("{key}={value:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// One sample line of the exposition format.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Sample {
    pub(crate) key: SeriesKey,
    pub(crate) value: f64,
}

/// What a metric is, from its `# HELP` and `# TYPE` lines.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct MetricMeta {
    pub(crate) help: String,
    pub(crate) kind: String,
}

/// A parsed exposition: the samples and each metric's description.
#[derive(Debug, Default)]
pub(crate) struct Exposition {
    pub(crate) samples: Vec<Sample>,
    pub(crate) meta: HashMap<String, MetricMeta>,
}

/// Parses Prometheus text format: comments other than HELP and TYPE are skipped, label values
/// may hold escaped quotes, backslashes and newlines, and a trailing timestamp is ignored.
/// A line that does not parse is skipped.
pub(crate) fn parse(text: &str) -> Exposition {
    let mut exposition = Exposition::default();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            let mut words = comment.trim_start().splitn(3, ' ');
            let (Some(kind), Some(name)) = (words.next(), words.next()) else {
                continue;
            };
            let rest = words.next().unwrap_or("").trim();
            let meta = || MetricMeta::default();
            match kind {
                "HELP" => {
                    exposition
                        .meta
                        .entry(name.to_string())
                        .or_insert_with(meta)
                        .help = rest.chars().take(MAX_HELP).collect();
                }
                "TYPE" => {
                    exposition
                        .meta
                        .entry(name.to_string())
                        .or_insert_with(meta)
                        .kind = rest.to_string();
                }
                _ => {}
            }
            continue;
        }
        if let Some(sample) = parse_sample(line) {
            exposition.samples.push(sample);
        }
    }
    exposition
}

fn parse_sample(line: &str) -> Option<Sample> {
    let name_end = line
        .find(|c: char| c == '{' || c.is_whitespace())
        .unwrap_or(line.len());
    let name = &line[..name_end];
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    {
        return None;
    }
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(after) = rest.strip_prefix('{') {
        let (parsed, remaining) = parse_labels(after)?;
        labels = parsed;
        rest = remaining;
    }
    let value_text = rest.split_whitespace().next()?;
    let value = match value_text {
        "+Inf" | "Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        other => other.parse().ok()?,
    };
    Some(Sample {
        key: SeriesKey {
            name: name.to_string(),
            labels,
        },
        value,
    })
}

/// Parses `k="v",k2="v2"}` (the text after `{`); returns the labels and the text after `}`.
fn parse_labels(text: &str) -> Option<(Vec<(String, String)>, &str)> {
    let mut labels = Vec::new();
    let mut rest = text;
    loop {
        rest = rest.trim_start();
        if let Some(after) = rest.strip_prefix('}') {
            return Some((labels, after));
        }
        let equals = rest.find('=')?;
        let key = rest[..equals].trim();
        if key.is_empty() {
            return None;
        }
        rest = rest[equals + 1..].trim_start().strip_prefix('"')?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            let (index, c) = chars.next()?;
            match c {
                '"' => break index,
                '\\' => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                other => value.push(other),
            }
        };
        labels.push((key.to_string(), value));
        rest = rest[end + 1..].trim_start();
        if let Some(after) = rest.strip_prefix(',') {
            rest = after;
        }
    }
}

/// The kept history.
#[derive(Default)]
pub(crate) struct MetricHistory {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Points (unix ms, value), oldest first.
    series: BTreeMap<SeriesKey, VecDeque<(u64, f64)>>,
    meta: HashMap<String, MetricMeta>,
    /// Distinct series refused because `MAX_SERIES` were held (counted once per sample).
    refused: usize,
}

/// What the charts draw: the history of every series, with its metric's description.
#[derive(Debug, Clone, Default)]
pub(crate) struct HistorySnapshot {
    pub(crate) series: Vec<(SeriesKey, Vec<(u64, f64)>)>,
    pub(crate) meta: HashMap<String, MetricMeta>,
    pub(crate) refused: usize,
}

impl MetricHistory {
    /// Adds one sampling of the metrics text taken at `unix_ms`.
    pub(crate) fn record(&self, text: &str, unix_ms: u64) {
        let exposition = parse(text);
        let mut inner = self
            .inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let oldest_kept =
            unix_ms.saturating_sub(SAMPLES_KEPT as u64 * SAMPLE_PERIOD.as_millis() as u64);
        let mut refused = 0;
        for sample in exposition.samples {
            if is_bucket(&sample.key.name) {
                continue;
            }
            let held = inner.series.len();
            match inner.series.get_mut(&sample.key) {
                Some(points) => points.push_back((unix_ms, sample.value)),
                None if held < MAX_SERIES => {
                    inner
                        .series
                        .insert(sample.key, VecDeque::from([(unix_ms, sample.value)]));
                }
                None => refused += 1,
            }
        }
        inner.refused = refused;
        inner.series.retain(|_, points| {
            while points.len() > SAMPLES_KEPT
                || points.front().is_some_and(|(at, _)| *at < oldest_kept)
            {
                points.pop_front();
            }
            !points.is_empty()
        });
        for (name, meta) in exposition.meta {
            inner.meta.insert(name, meta);
        }
        let names: std::collections::HashSet<String> = inner
            .series
            .keys()
            .map(|key| base_name(&key.name).to_string())
            .collect();
        inner.meta.retain(|name, _| names.contains(name.as_str()));
    }

    pub(crate) fn snapshot(&self) -> HistorySnapshot {
        let inner = self
            .inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        HistorySnapshot {
            series: inner
                .series
                .iter()
                .map(|(key, points)| (key.clone(), points.iter().copied().collect()))
                .collect(),
            meta: inner.meta.clone(),
            refused: inner.refused,
        }
    }
}

/// Whether a series is a histogram's bucket (never kept).
pub(crate) fn is_bucket(name: &str) -> bool {
    name.ends_with("_bucket")
}

/// The metric a histogram's or summary's series belongs to.
pub(crate) fn base_name(name: &str) -> &str {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix) {
            return base;
        }
    }
    name
}

/// Samples the head's metrics every `SAMPLE_PERIOD` into `history`, until the task is aborted.
pub(crate) async fn run(head: Arc<Head>, history: Arc<MetricHistory>) {
    let mut ticker = tokio::time::interval(SAMPLE_PERIOD);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let text = head.metrics_text();
        history.record(&text, unix_ms_now());
    }
}

/// Milliseconds since the Unix epoch.
pub(crate) fn unix_ms_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|since| since.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_labels_with_escapes_and_skips_comments() {
        let text = r#"
# HELP troupe_actors Actors, by state.
# TYPE troupe_actors gauge
# a free comment
troupe_actors{state="alive"} 3
weird{path="C:\\dir",quote="say \"hi\" }",line="a\nb"} 1.5e3 1700000000000
plain 7
bad{state="open 1
inf_one +Inf
"#;
        let exposition = parse(text);
        let by_name: Vec<_> = exposition
            .samples
            .iter()
            .map(|s| (s.key.name.as_str(), s.key.labels.clone(), s.value))
            .collect();
        assert_eq!(by_name.len(), 4, "{by_name:?}");
        assert_eq!(
            by_name[0],
            (
                "troupe_actors",
                vec![("state".to_string(), "alive".to_string())],
                3.0
            )
        );
        assert_eq!(
            by_name[1].1,
            vec![
                ("path".to_string(), "C:\\dir".to_string()),
                ("quote".to_string(), "say \"hi\" }".to_string()),
                ("line".to_string(), "a\nb".to_string()),
            ]
        );
        assert_eq!(by_name[1].2, 1500.0);
        assert_eq!(by_name[2], ("plain", vec![], 7.0));
        assert_eq!(by_name[3].2, f64::INFINITY);
        assert_eq!(
            exposition.meta["troupe_actors"],
            MetricMeta {
                help: "Actors, by state.".to_string(),
                kind: "gauge".to_string()
            }
        );
    }

    #[test]
    fn keeps_an_hour_and_a_bounded_number_of_series() {
        let history = MetricHistory::default();
        let period = SAMPLE_PERIOD.as_millis() as u64;
        for tick in 0..(SAMPLES_KEPT as u64 + 40) {
            history.record(&format!("a {tick}\nb{{x=\"1\"}} 2\n"), tick * period);
        }
        let snapshot = history.snapshot();
        assert_eq!(snapshot.series.len(), 2);
        let a = &snapshot.series[0];
        let buckets: String = (0..MAX_SERIES)
            .map(|i| format!("lat_bucket{{le=\"{i}\"}} 1\n"))
            .collect();
        history.record(&buckets, 0);
        assert_eq!(
            (history.snapshot().series.len(), history.snapshot().refused),
            (2, 0),
            "buckets are not kept, nor counted against the cap"
        );
        assert_eq!(a.0.name, "a");
        assert_eq!(a.1.len(), SAMPLES_KEPT);
        assert_eq!(a.1.last().map(|p| p.1), Some((SAMPLES_KEPT + 39) as f64));

        let many: String = (0..MAX_SERIES + 20)
            .map(|i| format!("m{{i=\"{i}\"}} 1\n"))
            .collect();
        history.record(&many, (SAMPLES_KEPT as u64 + 40) * period);
        let snapshot = history.snapshot();
        assert_eq!(snapshot.series.len(), MAX_SERIES);
        assert_eq!(
            snapshot.refused, 22,
            "2 held already, so 22 of the new ones are refused"
        );

        // A series no longer reported ages out after an hour.
        let later = (2 * SAMPLES_KEPT as u64 + 100) * period;
        history.record("a 1\n", later);
        let names: Vec<_> = history
            .snapshot()
            .series
            .iter()
            .map(|(key, _)| key.name.clone())
            .collect();
        assert_eq!(names, ["a"]);
    }
}
