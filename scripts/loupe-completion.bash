# Bash completion for `loupe`: subcommands, and each subcommand's flags as its own --help lists them
# (so the completion never drifts from the code). Installed as share/bash-completion/completions/loupe;
# from a source tree: source scripts/loupe-completion.bash
_loupe() {
    local cur prev cmd words
    cur=${COMP_WORDS[COMP_CWORD]}
    prev=${COMP_WORDS[COMP_CWORD-1]}
    cmd=${COMP_WORDS[1]}
    local loupe=${COMP_WORDS[0]}
    if [[ $COMP_CWORD -eq 1 ]]; then
        # The subcommands: the indented first words of `loupe --help`'s command list.
        words=$("$loupe" --help 2>/dev/null | awk '/^commands:/{on=1; next} on && /^  [a-z]/{print $1}')
        COMPREPLY=($(compgen -W "$words --help --version" -- "$cur"))
        return
    fi
    case $prev in
        --models|--static|--docs|--reports|--out|--tls-cert|--tls-key|--data|--samples|--checkpoint|--image)
            COMPREPLY=($(compgen -f -- "$cur"))
            compopt -o filenames 2>/dev/null
            return ;;
    esac
    if [[ $prev == --* ]]; then
        # A flag whose `loupe CMD --help` lists its values as `--flag a|b|c` (--invert, explain's
        # --baseline): those values; explain's --method: the list after "method M:" in its --help.
        if [[ $prev == --method ]]; then
            words=$("$loupe" "$cmd" --help 2>&1 | tr '\n' ' ' | sed -n 's/.*method M: \([^.]*\)\..*/\1/p' |
                    sed 's/(default)//g; s/,/ /g')
        else
            words=$("$loupe" "$cmd" --help 2>&1 | grep -o -- "$prev [a-z0-9_]*\(|[a-z0-9_]*\)\+" | head -n 1)
            words=${words#"$prev "}
            words=${words//|/ }
        fi
        if [[ -n ${words// /} ]]; then
            COMPREPLY=($(compgen -W "$words" -- "$cur"))
            return
        fi
    fi
    if [[ $cur == -* ]]; then
        # Every --flag that `loupe CMD --help` mentions.
        words=$("$loupe" "$cmd" --help 2>&1 | grep -o -- '--[a-z][a-z0-9-]*' | sort -u)
        COMPREPLY=($(compgen -W "$words" -- "$cur"))
        return
    fi
    COMPREPLY=($(compgen -f -- "$cur"))
    compopt -o filenames 2>/dev/null
}
complete -F _loupe loupe
