#!/usr/bin/env bash
# Nightly backup of the home folder with rsync into dated snapshots.
# Unchanged files are hard-linked to the previous snapshot (--link-dest), so each snapshot
# looks complete but only changed files use new disk space.
set -euo pipefail

SRC="$HOME/"
DEST="/mnt/backup/snapshots"
TODAY=$(date +%Y-%m-%d)
LATEST="$DEST/latest"

rsync -a --delete --exclude '.cache' --link-dest="$LATEST" "$SRC" "$DEST/$TODAY"
ln -sfn "$DEST/$TODAY" "$LATEST"

# Keep the last 30 snapshots.
ls -1d "$DEST"/20* | head -n -30 | xargs -r rm -rf
