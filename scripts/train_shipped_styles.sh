#!/usr/bin/env bash
# Train the styles shipped in model_store/shipped/ with the project's own CLI, one after the other.
#
#   scripts/train_shipped_styles.sh                 # every style below
#   scripts/train_shipped_styles.sh the-scream      # just these ids
#
# Needs ../shared/data (photos + paintings, see its MANIFEST.md). The six public-domain photos
# bundled in instyle/assets/photos are kept out of training, so previews and the README gallery
# show photos the styles never saw. Each style is published to runs/store/<id>/1 (report and
# checkpoints in runs/<id>/; rerunning resumes); ship it with:
#   .venv/bin/python scripts/ship_style.py <id>   # its files, the photos' origin, the grid into docs/
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data}
PHOTOS=${PHOTOS:-runs/train_photos}
INSTYLE=${INSTYLE:-.venv/bin/instyle}
ITERATIONS=${ITERATIONS:-2000}   # 1000 for the styles trained on the 2-core CPU in one session

mkdir -p "$PHOTOS"
for f in "$DATA"/content/*.jpg; do
  [ -e "instyle/assets/photos/$(basename "$f")" ] || ln -sf "$(realpath "$f")" "$PHOTOS/"
done

GC='file GPL-3+ (gcompris-qt-data 3.1-2, Debian; reassembled from the paintings activity), artwork public domain'
# id | style file | title | source | license | generator (johnson unless named)
STYLES=(
  "starry-night|starry_night.jpg|The Starry Night|Vincent van Gogh, The Starry Night (1889); opencv-doc 4.6.0+dfsg-12 (Debian), examples/data/starry_night.jpg|artwork public domain; file Apache-2.0 AND BSD-3-Clause"
  "the-scream|scream.jpg|The Scream|Edvard Munch, The Scream (1893); darknet 0.0.0+git20180914.61c9d02e-2+b4 (Debian), data/scream.jpg|artwork public domain; file GPL-3.0+ or MIT or WTFPL"
  "great-wave|gcompris_GreatWave.jpg|The Great Wave off Kanagawa|Katsushika Hokusai, The Great Wave off Kanagawa (1823-1829); gcompris-qt-data paintings.rcc GreatWave*.webp|$GC"
  "composition-viii|gcompris_kandinky.jpg|Composition VIII|Wassily Kandinsky, Composition VIII (1923); gcompris-qt-data paintings.rcc kandinky*.webp|$GC"
  "auvers|gcompris_gogh_auvert.jpg|Village Street in Auvers|Vincent van Gogh, Village Street in Auvers (1890); gcompris-qt-data paintings.rcc gogh_auvert*.webp|$GC"
  "ejiri|gcompris_EjiriSuruga.jpg|Ejiri in Suruga Province|Katsushika Hokusai, Ejiri in Suruga Province (1830-1833); gcompris-qt-data paintings.rcc EjiriSuruga*.webp|$GC"
  "starry-night-ulyanov|starry_night.jpg|The Starry Night (Ulyanov texture network)|Vincent van Gogh, The Starry Night (1889); opencv-doc 4.6.0+dfsg-12 (Debian), examples/data/starry_night.jpg|artwork public domain; file Apache-2.0 AND BSD-3-Clause|ulyanov"
)

for entry in "${STYLES[@]}"; do
  IFS='|' read -r id file title source license arch <<<"$entry"
  if [ $# -gt 0 ] && [[ ! " $* " =~ " $id " ]]; then continue; fi
  resume=()
  [ -f "runs/$id/checkpoint.pt" ] && resume=(--resume)
  echo "== $id ($file)"
  "$INSTYLE" train --photos "$PHOTOS" --style "$DATA/styles/$file" --name "$id" --title "$title" \
    --style-source "$source" --style-license "$license" \
    --arch "${arch:-johnson}" \
    --iterations "$ITERATIONS" --batch-size 2 --image-size 256 --style-size 512 --style-weight 2 \
    --checkpoint-dir "runs/$id" --store runs/store --replace "${resume[@]}"
done
