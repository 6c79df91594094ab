#!/bin/sh
# make run: the webhook endpoint in the foreground on 127.0.0.1:8080.

set -e

top=$(cd "$(dirname "$0")/.." && pwd)
run="$top/build/run"

mkdir -p "$run/logs" "$run/dead-letter" "$run/body"

# the demo secret, private as a real one must be
cp "$top/samples/app_secret" "$run/app_secret"
chmod 600 "$run/app_secret"

user=""
if [ "$(id -u)" = 0 ]; then
    user="user root;"
fi

cat <<MSG

nginx-meta-webhook is starting on http://127.0.0.1:8080/webhook
(embedded shared-memory state; events go to build/run/logs/events.log)

In another terminal:

  handshake     scripts/mw-post --handshake demo-verify-token
  a delivery    scripts/mw-post samples/text.json
  a batch       scripts/mw-post samples/batch.json
  the events    tail -f build/run/logs/events.log

The samples are signed with samples/app_secret, the demo app secret this
endpoint is configured with.  Stop with Ctrl-C.

MSG

exec /usr/sbin/nginx -p "$run/" -c "$top/conf.d/nginx-run.conf" \
    -g "daemon off; $user"
