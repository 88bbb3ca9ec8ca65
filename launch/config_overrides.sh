# Sourced by the launch scripts: turn GLMD_* environment variables and the command line's --set
# values into glmd-train's `--set section.key=value` arguments.
#
#   glmd_set_args FIRST_SETS... -- USER_SETS...   fills the array SET_ARGS
#
# Order (later wins): FIRST_SETS (script defaults), then GLMD_TEACHER_CKPT, GLMD_TRAIN_PREFIX,
# GLMD_VALID_PREFIX, GLMD_TOKENIZER, GLMD_SAVE_DIR, then USER_SETS (the command line's --set).
glmd_set_args() {
    local sets=() user=() seen_separator=0 s
    for s in "$@"; do
        if [[ "$s" == "--" && $seen_separator -eq 0 ]]; then seen_separator=1; continue; fi
        if ((seen_separator)); then user+=("$s"); else sets+=("$s"); fi
    done
    [[ -n "${GLMD_TEACHER_CKPT:-}" ]] && sets+=("teacher_checkpoint=$GLMD_TEACHER_CKPT")
    [[ -n "${GLMD_TRAIN_PREFIX:-}" ]] && sets+=("data.train_prefix=$GLMD_TRAIN_PREFIX")
    [[ -n "${GLMD_VALID_PREFIX:-}" ]] && sets+=("data.valid_prefix=$GLMD_VALID_PREFIX")
    [[ -n "${GLMD_TOKENIZER:-}" ]] && sets+=("data.tokenizer_model=$GLMD_TOKENIZER")
    if [[ -n "${GLMD_SAVE_DIR:-}" ]]; then
        sets+=("checkpoint.save_dir=$GLMD_SAVE_DIR" "logging.tensorboard_dir=$GLMD_SAVE_DIR/tensorboard")
    fi
    sets+=(${user[@]+"${user[@]}"})
    SET_ARGS=()
    for s in ${sets[@]+"${sets[@]}"}; do SET_ARGS+=(--set "$s"); done
}
