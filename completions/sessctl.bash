_sessctl_completion() {
    local IFS=$'\n'
    local response line="${COMP_LINE:0:COMP_POINT}" i c
    local -a words
    IFS=$' \t' read -r -a words <<< "$line"
    [[ -z "$line" || "$line" == *[[:blank:]] ]] && words+=("")
    local cword=$(( ${#words[@]} - 1 ))
    local cur="${words[cword]}" tail
    tail="$cur"
    for (( i = ${#cur} - 1; i >= 0; i-- )); do
        c="${cur:i:1}"
        if [[ "$COMP_WORDBREAKS" == *"$c"* ]]; then
            tail="${cur:i+1}"
            break
        fi
    done
    local prefix="${cur:0:${#cur}-${#tail}}"

    response=$(env COMP_WORDS="${words[*]}" COMP_CWORD=$cword _SESSCTL_COMPLETE=bash_complete $1)

    for completion in $response; do
        IFS=',' read type value <<< "$completion"

        if [[ $type == 'dir' ]]; then
            COMPREPLY=()
            compopt -o dirnames
        elif [[ $type == 'file' ]]; then
            COMPREPLY=()
            compopt -o default
        elif [[ $type == 'plain' ]]; then
            COMPREPLY+=("${value#"$prefix"}")
        fi
    done

    return 0
}

_sessctl_completion_setup() {
    complete -o nosort -F _sessctl_completion sessctl
}

_sessctl_completion_setup;
