#!/bin/sh
# Start-up check of the compose stack (docker-compose.yml's one-shot `preflight` service, which
# every other service waits for): refuses to start while a secret still holds the placeholder
# from .env.example, or while the application's S3 user is MinIO's root user.
#
#   sh deploy/preflight.sh NAME...    # NAME: a variable of the environment to check
#
# Exits 0 when every named variable is set to a real value; otherwise prints one line naming
# the variables to replace and exits 1. POSIX sh: it runs in a busybox image and in the tests.

placeholders=""
for name in "$@"; do
  case "$name" in
    '' | [!A-Za-z_]* | *[!A-Za-z0-9_]*)
      echo "preflight: '$name' is not a variable name" >&2
      exit 2
      ;;
  esac
  eval "value=\${$name-}"   # safe: $name is a plain identifier (checked above)
  case "$value" in
    *change-me*) placeholders="$placeholders $name" ;;
  esac
done

status=0
if [ -n "$placeholders" ]; then
  echo "preflight: .env still has change-me placeholders in:${placeholders}; replace each (e.g. openssl rand -hex 32)" >&2
  status=1
fi
# the pipeline's keys must not be MinIO's root (which can change users, policies, every bucket)
if [ -n "${DANCEGEN_S3_ACCESS_KEY-}" ] && [ "${DANCEGEN_S3_ACCESS_KEY-}" = "${MINIO_ROOT_USER-}" ]; then
  echo "preflight: DANCEGEN_S3_ACCESS_KEY equals MINIO_ROOT_USER in .env; give the application its own S3 user" >&2
  status=1
fi
[ "$status" -eq 0 ] && echo "preflight: no placeholder secrets"
exit "$status"
