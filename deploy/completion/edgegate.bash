# bash completion for edgegate. Install as
# /usr/share/bash-completion/completions/edgegate (loaded on first use by
# the bash-completion package), or source it from ~/.bashrc.

_edgegate() {
    local cur prev cmd i
    COMPREPLY=()
    cur=${COMP_WORDS[COMP_CWORD]}
    prev=${COMP_WORDS[COMP_CWORD-1]}
    local commands="run check reload upgrade cloudflare demo version help"

    # The command: the first word after edgegate ("cloudflare update" is
    # one, with update as its second word).
    cmd=""
    for ((i = 1; i < COMP_CWORD; i++)); do
        case ${COMP_WORDS[i]} in
        -*) ;;
        *)
            if [[ -z $cmd ]]; then
                cmd=${COMP_WORDS[i]}
            elif [[ $cmd == cloudflare ]]; then
                cmd="cloudflare ${COMP_WORDS[i]}"
            fi
            ;;
        esac
    done

    # A flag's value.
    case $prev in
    --config | -config | --ips-v4 | -ips-v4 | --ips-v6 | -ips-v6 | --ca | -ca | --reload | -reload)
        COMPREPLY=($(compgen -f -- "$cur"))
        compopt -o filenames 2>/dev/null
        return 0
        ;;
    --dir | -dir)
        COMPREPLY=($(compgen -d -- "$cur"))
        compopt -o filenames 2>/dev/null
        return 0
        ;;
    --listen | -listen)
        return 0
        ;;
    esac

    local flags=""
    case $cmd in
    "")
        COMPREPLY=($(compgen -W "$commands --help --version" -- "$cur"))
        return 0
        ;;
    help)
        COMPREPLY=($(compgen -W "$commands" -- "$cur"))
        return 0
        ;;
    cloudflare)
        COMPREPLY=($(compgen -W "update help --help" -- "$cur"))
        return 0
        ;;
    run | check | reload | upgrade) flags="--config --help" ;;
    "cloudflare update") flags="--ips-v4 --ips-v6 --ca --dir --reload --help" ;;
    demo) flags="--listen --check --help" ;;
    version) flags="--help" ;;
    esac
    COMPREPLY=($(compgen -W "$flags" -- "$cur"))
    return 0
}

complete -F _edgegate edgegate
