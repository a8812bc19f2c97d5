# Shared by the example_sh action scripts (sourced, not an action itself).
#
# The "provider" is simulated with one file per resource under
# $CLOUDBURST_HOME/var/example_sh/instances/, holding KEY=VALUE lines. A real
# driver would call its provider's API here instead.

set -u

STATE_DIR="${CLOUDBURST_HOME:?CLOUDBURST_HOME is not set}/var/example_sh"
mkdir -p "$STATE_DIR/instances" "$STATE_DIR/tokens"

# fail MESSAGE...: report MESSAGE as the action's error and exit non-zero.
# The daemon shows the text between the markers as the VM's error.
fail() {
    echo "ERROR MESSAGE --8<------" >&2
    echo "$*" >&2
    echo "ERROR MESSAGE ------>8--" >&2
    exit 1
}

# instance_file DEPLOY_ID: the file of a resource (refuses ids that are not ours).
instance_file() {
    case "$1" in
        sh-*[!A-Za-z0-9-]* | "") fail "invalid deploy id '$1'" ;;
        sh-*) echo "$STATE_DIR/instances/$1" ;;
        *) fail "invalid deploy id '$1' (example_sh ids start with sh-)" ;;
    esac
}

# value KEY FILE: the value of KEY in a resource file.
value() {
    sed -n "s/^$1=//p" "$2" | tail -n 1
}

# xml_value NAME FILE: the text of the first <NAME> element of the deployment file
# (plain elements with XML-escaped text).
xml_value() {
    grep -o "<$1>[^<]*</$1>" "$2" | head -n 1 |
        sed -e "s:</*$1>::g" -e 's/&lt;/</g' -e 's/&gt;/>/g' -e 's/&amp;/\&/g'
}
