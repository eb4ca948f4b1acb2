#!/bin/sh
# Runs on every start from the template's files, delivered read-only at $OUTPOST_TEMPLATE_DIR.
echo "workspace $OUTPOST_WORKSPACE: $(nproc) CPUs, memory limit ${OUTPOST_PARAM_MEMORY:-none}"
