# Shared by the scripts that need PostgreSQL (with pgvector) and Redis. Sourced after lib.sh.
# Each function checks first and only then acts, saying what it does.

PG_HOST=127.0.0.1
PG_PORT=5432
REDIS_PORT=6379

ensure_postgres() {
  ensure_apt postgresql postgresql-client
  if ! pg_isready -q -h "$PG_HOST" -p "$PG_PORT"; then
    say "starting PostgreSQL"
    local v
    v=$(ls /etc/postgresql | sort -V | tail -n1)
    need_root_or_sudo pg_ctlcluster --skip-systemctl-redirect "$v" main start
    for _ in $(seq 1 50); do pg_isready -q -h "$PG_HOST" -p "$PG_PORT" && break; sleep 0.2; done
  fi
  pg_isready -q -h "$PG_HOST" -p "$PG_PORT" || { say "PostgreSQL is not answering on $PG_HOST:$PG_PORT"; exit 1; }
}

ensure_redis() {
  ensure_apt redis-server redis-tools
  if ! redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping >/dev/null 2>&1; then
    say "starting Redis"
    need_root_or_sudo mkdir -p /var/lib/redis /var/log/redis
    need_root_or_sudo redis-server --daemonize yes --bind 127.0.0.1 -::1 --port "$REDIS_PORT" --save "" \
      --appendonly no --dir /var/lib/redis --logfile /var/log/redis/strata.log
    for _ in $(seq 1 50); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
  fi
  redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 || { say "Redis is not answering on port $REDIS_PORT"; exit 1; }
}

# pgvector is not packaged for Debian 12: build it from Debian trixie's source package, fetched
# with an isolated apt state whose only source is a deb-src entry on this machine's own mirror.
ensure_pgvector() {
  local v pgc
  v=$(ls /etc/postgresql | sort -V | tail -n1)
  pgc="/usr/lib/postgresql/$v/bin/pg_config"
  if [ -f "$($pgc --sharedir)/extension/vector.control" ]; then
    return 0
  fi
  ensure_apt "postgresql-server-dev-$v" build-essential dpkg-dev
  local mirror
  mirror=$(sed -n 's/^URIs:[[:space:]]*//p' /etc/apt/sources.list.d/*.sources 2>/dev/null | grep -v security | head -n1)
  [ -n "$mirror" ] || mirror=$(awk '/^deb /{print $2; exit}' /etc/apt/sources.list 2>/dev/null)
  [ -n "$mirror" ] || { say "no Debian mirror configured in apt's sources; cannot fetch pgvector's source"; exit 1; }
  say "building pgvector from Debian trixie's source package (mirror: configured apt mirror)"
  local work
  work=$(mktemp -d)
  mkdir -p "$work/lists/partial" "$work/cache/archives/partial" "$work/parts"
  printf 'Types: deb-src\nURIs: %s\nSuites: trixie\nComponents: main\nTrusted: yes\n' "$mirror" > "$work/parts/trixie-src.sources"
  local opts=(-o APT::Sandbox::User=root -o Dir::Etc::SourceList=/dev/null -o "Dir::Etc::SourceParts=$work/parts"
              -o "Dir::State::Lists=$work/lists" -o "Dir::Cache=$work/cache")
  apt-get "${opts[@]}" update -qq
  (cd "$work" && apt-get "${opts[@]}" source --download-only pgvector >/dev/null)
  tar -xf "$work"/pgvector_*.orig.tar.* -C "$work"
  local src
  src=$(find "$work" -maxdepth 1 -type d -name 'pgvector-*' | head -n1)
  make -s -C "$src" OPTFLAGS="" with_llvm=no PG_CONFIG="$pgc" >/dev/null
  need_root_or_sudo make -s -C "$src" OPTFLAGS="" with_llvm=no PG_CONFIG="$pgc" install >/dev/null
  rm -rf "$work"
  say "pgvector installed for PostgreSQL $v"
}
