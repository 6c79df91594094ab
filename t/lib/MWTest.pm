package MWTest;

# The test harness of nginx-meta-webhook: a real nginx (the stock
# /usr/sbin/nginx with the module loaded), real HTTP over sockets, and a
# real upstream (MWTest::Inbox).  Core Perl modules only.
#
#   use MWTest;
#   my $inbox = MWTest::Inbox->start;
#   my $ng = MWTest::Nginx->new;               # run dir + free port
#   $ng->start(server_conf => webhook_location(inbox => $inbox->port,
#                                               secret => $ng->secret_file));
#   my $res = $ng->deliver($payload_bytes);    # signed POST /webhook
#   is $res->status, 200;
#
# Every nginx and inbox started here is stopped when the test ends, even
# when it dies (END block, TERM/INT/HUP handlers); forked children never
# run that cleanup.

use strict;
use warnings;

use Cwd ();
use Digest::SHA ();
use Exporter 'import';
use File::Basename ();
use File::Path ();
use IO::Select;
use IO::Socket::INET;
use JSON::PP ();
use POSIX ();
use Test::More ();
use Time::HiRes ();

use MWTest::Response;
use MWTest::Inbox;
use MWTest::Meta;

our @EXPORT = qw(
    $ROOT $NGINX $MODULE $SECRET $SECRET2 $TOKEN
    sign sig_header free_port closed_port http_request raw_request
    webhook_location setup slurp spew wait_until json_decode json_encode
    nginx_t deadline absent_from in_parallel
);

our $ROOT   = Cwd::abs_path(File::Basename::dirname(__FILE__) . '/../..');
our $NGINX  = $ENV{TEST_NGINX_BINARY} || '/usr/sbin/nginx';
our $MODULE = $ENV{TEST_MW_MODULE}
              || "$ROOT/build/ngx_http_meta_webhook_module.so";
our $RUNDIR = "$ROOT/build/t-run";

# Demo credentials, used only by the tests.
our $SECRET  = 'mw-test-app-secret-3b9f6e1c0d2a';
our $SECRET2 = 'mw-test-previous-secret-77a1c4e9';
our $TOKEN   = 'mw-verify-token-5e2d8a';

our $OWNER_PID = $$;
our $DIRSEQ = 0;                # run dirs made so far
our @LIVE;                      # objects with a ->_cleanup method
our @DIRS;                      # run dirs made by this process

sub _cleanup_all {
    return unless $$ == $OWNER_PID;
    for my $o (reverse @LIVE) {
        eval { $o->_cleanup };
    }
    @LIVE = ();
}

# Everything is stopped; the run dirs (configs, logs, recorded requests)
# are removed when the test passed, and kept for a look when it failed,
# died, or MW_KEEP=1 is set.
END {
    my $status = $?;
    _cleanup_all();
    if ($$ == $OWNER_PID && $status == 0 && !$ENV{MW_KEEP}
        && Test::More->builder->is_passing)
    {
        File::Path::remove_tree($_) for @DIRS;
    }
    $? = $status;
}

my %SIGNUM = (HUP => 1, INT => 2, TERM => 15);
for my $sig (keys %SIGNUM) {
    $SIG{$sig} = sub {
        _cleanup_all() if $$ == $OWNER_PID;
        POSIX::_exit(128 + $SIGNUM{$sig});
    };
}
$SIG{PIPE} = 'IGNORE';


sub register { push @LIVE, $_[0] }

sub unregister {
    my $o = shift;
    @LIVE = grep { $_ != $o } @LIVE;
}


# ---------------------------------------------------------------------
# small utilities

sub slurp {
    my ($path) = @_;
    open my $fh, '<:raw', $path or return undef;
    local $/;
    my $s = <$fh>;
    close $fh;
    return defined $s ? $s : '';
}

sub spew {
    my ($path, $data, $mode) = @_;
    my $tmp = "$path.tmp$$";
    open my $fh, '>:raw', $tmp or die "open $tmp: $!";
    print {$fh} $data;
    close $fh or die "close $tmp: $!";
    chmod $mode, $tmp if defined $mode;
    rename $tmp, $path or die "rename $tmp: $!";
    return $path;
}

sub deadline { Time::HiRes::time() + $_[0] }

# Polls $cond every $step seconds for at most $timeout seconds; returns
# the condition's last value.  Never a sleep for correctness: bounded.
sub wait_until {
    my ($cond, $timeout, $step) = @_;
    $timeout //= 10;
    $step    //= 0.02;
    my $end = deadline($timeout);
    while (1) {
        my $v = $cond->();
        return $v if $v;
        return $v if Time::HiRes::time() >= $end;
        Time::HiRes::sleep($step);
    }
}

my $JSON = JSON::PP->new->utf8->canonical->allow_nonref;

sub json_decode {
    my ($s) = @_;
    my $v = eval { $JSON->decode($s) };
    return $v;
}

sub json_encode { $JSON->encode($_[0]) }

# absent_from($text, $needle, $name): a test that $needle occurs nowhere
# in $text; on failure shows only the lines holding it (cut short).
sub absent_from {
    my ($text, $needle, $name) = @_;
    my $tb = Test::More->builder;
    my @hits = grep { index($_, $needle) >= 0 } split /\n/, $text // '';
    my $ok = $tb->ok(!@hits, $name);
    if (!$ok) {
        $tb->diag(scalar(@hits) . " line(s) hold it, e.g.:");
        for my $l (@hits[0 .. ($#hits < 2 ? $#hits : 2)]) {
            $l = substr($l, 0, 300) . '...' if length $l > 300;
            $tb->diag("  $l");
        }
    }
    return $ok;
}

# Runs $code->($i) in $n forked children that start together (a barrier
# file); returns their string results in order.  Bounded: children still
# running after $timeout seconds are killed and give "timeout".
sub in_parallel {
    my ($n, $code, $timeout) = @_;
    $timeout //= 30;
    my $dir = new_dir('par');
    my @pids;
    # the start gate: every child blocks reading a pipe, and all wake at
    # once when the parent closes its end (EOF), not a poll apart
    pipe(my $gate_r, my $gate_w) or die "pipe: $!";
    for my $i (0 .. $n - 1) {
        my $pid = fork;
        die "fork: $!" unless defined $pid;
        if (!$pid) {
            close $gate_w;
            my $buf;
            sysread $gate_r, $buf, 1;
            my $res = eval { $code->($i) };
            $res = "error: $@" unless defined $res;
            spew("$dir/res-$i", $res);
            POSIX::_exit(0);
        }
        push @pids, $pid;
    }
    close $gate_r;
    select undef, undef, undef, 0.05;   # the children reach the gate
    close $gate_w;
    my %left = map { $_ => 1 } @pids;
    wait_until(sub {
        for my $p (keys %left) {
            delete $left{$p} if waitpid($p, POSIX::WNOHANG()) != 0;
        }
        !%left;
    }, $timeout, 0.01);
    for my $p (keys %left) { kill 'KILL', $p; waitpid $p, 0 }
    return map { slurp("$dir/res-$_") // 'timeout' } 0 .. $n - 1;
}

sub sign {
    my ($body, $secret) = @_;
    $secret //= $SECRET;
    return Digest::SHA::hmac_sha256_hex($body, $secret);
}

sub sig_header {
    my ($body, $secret) = @_;
    return 'sha256=' . sign($body, $secret);
}

# A port nobody listens on now.  Bind to port 0 and let the kernel pick;
# the kernel picks ports at random, so two tests running side by side
# (prove -j2) do not collide; MWTest::Nginx retries on EADDRINUSE anyway.
sub free_port {
    my $s = IO::Socket::INET->new(
        LocalAddr => '127.0.0.1', LocalPort => 0, Proto => 'tcp',
        Listen => 1, ReuseAddr => 1,
    ) or die "free_port: $!";
    my $port = $s->sockport;
    close $s;
    return $port;
}

# A port that refuses connections for as long as the test runs: bound,
# never listening, so nobody else can take it.  Returns the port.
my @HELD;
sub closed_port {
    my $s = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0,
                                  Proto => 'tcp')
        or die "closed_port: $!";
    push @HELD, $s;
    return $s->sockport;
}

sub new_dir {
    my ($tag) = @_;
    my $name = File::Basename::basename($0);
    $name =~ s/\.t$//;
    $name =~ s/[^A-Za-z0-9_.-]/_/g;
    my $dir;
    for (1 .. 100) {
        $dir = sprintf '%s/%s-%s-%d-%d', $RUNDIR, $name, $tag, $$,
                       ++$MWTest::DIRSEQ;
        last unless -e $dir;
    }
    File::Path::make_path($dir);
    push @DIRS, $dir;
    return $dir;
}


# ---------------------------------------------------------------------
# HTTP over a raw socket

# Sends $bytes exactly as given and reads the answer until the server
# closes the connection (nginx runs the log phase, where the module
# commits or releases its dedupe claims, before it closes: reading to EOF
# makes sequential tests deterministic).  Returns an MWTest::Response, or
# one with status 0 and ->error set.
sub raw_request {
    my ($port, $bytes, %o) = @_;
    my $timeout = $o{timeout} // 20;
    my $end = deadline($timeout);

    my $s = IO::Socket::INET->new(
        PeerAddr => '127.0.0.1', PeerPort => $port, Proto => 'tcp',
        Timeout => $timeout,
    ) or return MWTest::Response->error("connect to $port: $!");
    binmode $s;
    $s->autoflush(1);

    my $off = 0;
    my $sel = IO::Select->new($s);
    my $write_error;
    while ($off < length $bytes) {
        my $left = $end - Time::HiRes::time();
        return MWTest::Response->error('timeout while sending')
            if $left <= 0;
        # the server may answer (413, 403, ...) before reading it all
        if ($sel->can_read(0)) {
            last;
        }
        next unless $sel->can_write($left < 1 ? $left : 1);
        my $n = syswrite $s, $bytes, 65536, $off;
        if (!defined $n) {
            next if $!{EAGAIN} || $!{EINTR};
            $write_error = "$!";
            last;
        }
        $off += $n;
    }
    shutdown $s, 1 if $o{half_close};

    my $raw = '';
    while (1) {
        my $left = $end - Time::HiRes::time();
        if ($left <= 0) {
            close $s;
            return MWTest::Response->error('timeout while reading', $raw);
        }
        next unless $sel->can_read($left);
        my $n = sysread $s, $raw, 65536, length $raw;
        if (!defined $n) {
            next if $!{EINTR} || $!{EAGAIN};
            last if length $raw;        # reset after an early answer
            close $s;
            return MWTest::Response->error("read: $!"
                . ($write_error ? " (write: $write_error)" : ''));
        }
        last if $n == 0;
    }
    close $s;
    return MWTest::Response->parse($raw);
}

# http_request($port, method => 'POST', path => '/webhook',
#              headers => [Name => value, ...], body => $bytes)
# Adds Host, Content-Length (when a body is given and none was set) and
# Connection: close.  headers is a list, so a header may repeat.
sub http_request {
    my ($port, %o) = @_;
    my $method = $o{method} // 'GET';
    my $path   = $o{path}   // '/';
    my @h      = @{ $o{headers} // [] };
    my $body   = $o{body};

    my %have;
    for (my $i = 0; $i < @h; $i += 2) { $have{ lc $h[$i] } = 1 }

    my $req = "$method $path HTTP/1.1\r\n";
    $req .= "Host: localhost\r\n" unless $have{host};
    for (my $i = 0; $i < @h; $i += 2) {
        $req .= "$h[$i]: $h[$i + 1]\r\n";
    }
    if (defined $body && !$have{'content-length'}
        && !$have{'transfer-encoding'})
    {
        $req .= 'Content-Length: ' . length($body) . "\r\n";
    }
    $req .= "Connection: close\r\n" unless $have{connection};
    $req .= "\r\n";
    $req .= $body if defined $body;
    return raw_request($port, $req, %o);
}


# ---------------------------------------------------------------------
# configuration snippets

# The usual webhook location.  Options:
#   path (/webhook), token ($TOKEN), secret (file), previous (file),
#   inbox (port: proxy to it; absent: the module answers itself),
#   extra (more directives), body_size (4m), log (access_log spec).
# With MW_TEST_JSON_READER set (fast or jansson), every such location
# parses with that reader.
sub webhook_location {
    my (%o) = @_;
    my $path = $o{path} // '/webhook';
    my $conf = "location $path {\n";
    $conf .= '    client_max_body_size ' . ($o{body_size} // '4m') . ";\n";
    $conf .= "    meta_webhook;\n";
    $conf .= '    meta_webhook_verify_token ' . ($o{token} // $TOKEN) . ";\n"
        unless exists $o{token} && !defined $o{token};
    $conf .= "    meta_webhook_app_secret_file $o{secret};\n"
        if defined $o{secret};
    $conf .= "    meta_webhook_app_secret_previous_file $o{previous};\n"
        if defined $o{previous};
    $conf .= "    $o{extra}\n" if defined $o{extra};
    # MW_TEST_JSON_READER: run a test file with the other reader
    $conf .= "    meta_webhook_json_reader $ENV{MW_TEST_JSON_READER};\n"
        if $ENV{MW_TEST_JSON_READER};
    if (defined $o{inbox}) {
        $conf .= "    proxy_set_body \$meta_webhook_events;\n"
              .  "    proxy_set_header Content-Type application/json;\n"
              .  "    proxy_set_header X-MW-Result \$meta_webhook_result;\n"
              .  "    proxy_set_header X-MW-Updates \$meta_webhook_updates;\n"
              .  "    proxy_set_header X-MW-New \$meta_webhook_new;\n"
              .  "    proxy_read_timeout 30s;\n"
              .  "    proxy_pass http://127.0.0.1:$o{inbox};\n";
    }
    $conf .= "    add_header X-MW-Result \$meta_webhook_result always;\n"
        unless $o{no_result_header};
    $conf .= "}\n";
    return $conf;
}


# The usual test server: an inbox, and nginx with
#   /webhook   the endpoint, proxying to the inbox
#   /local     the endpoint without a content handler (the module answers
#              200 itself), logging $meta_webhook_events to
#              logs/events.log with escape=none
# Options: workers, error_level, secret (the app secret), extra (directives for both locations),
# webhook_extra, local_extra, http_conf, server_conf (more locations),
# %INBOX% in server_conf is the inbox's port.
# inbox => {status, delay}, no_inbox, files => {name => content or
# [content, mode]} (written to DIR/conf/ before the start).
# Returns ($nginx, $inbox).
sub setup {
    my (%o) = @_;
    my $inbox = $o{no_inbox} ? undef
              : MWTest::Inbox->start(%{ $o{inbox} // {} });
    my $ng = MWTest::Nginx->new(workers => $o{workers},
                                error_level => $o{error_level},
                                secret => $o{secret});
    for my $name (sort keys %{ $o{files} // {} }) {
        my $spec = $o{files}{$name};
        $ng->write_file($name, ref $spec ? @$spec : ($spec));
    }
    my $extra = $o{extra} // '';
    my $server = webhook_location(
            inbox => $inbox ? $inbox->port : undef,
            secret => $ng->secret_file,
            extra => join("\n    ", grep { length } $extra,
                          $o{webhook_extra} // ''))
        . webhook_location(path => '/local', secret => $ng->secret_file,
            extra => join("\n    ", grep { length } $extra,
                          $o{local_extra} // '',
                          'access_log %DIR%/logs/events.log mwevents;',
                          'access_log %DIR%/logs/access.log;'))
        . ($o{server_conf} // '');
    if ($inbox) {
        my $ip = $inbox->port;
        $server =~ s/%INBOX%/$ip/g;
    }
    $ng->start(
        http_conf => "    log_format mwevents escape=none "
                   . "'\$meta_webhook_events';\n" . ($o{http_conf} // ''),
        server_conf => $server,
        %{ $o{start} // {} },
    );
    return ($ng, $inbox);
}

# nginx -t on a configuration: nginx_t(http_conf => ..., server_conf =>
# ..., main_conf => ..., secret => ...).  Returns
# (exit status, combined output, MWTest::Nginx object).
sub nginx_t {
    my (%o) = @_;
    my $ng = MWTest::Nginx->new(%o);
    my ($rc, $out) = $ng->test_config(%o);
    return ($rc, $out, $ng);
}


# =====================================================================

package MWTest::Nginx;

use strict;
use warnings;

use parent 'MWTest::Owned';

use POSIX ();
use Time::HiRes ();

# MWTest::Nginx->new(workers => 2, error_level => 'info',
#                    secret => $SECRET (written to DIR/app_secret, 0600))
sub new {
    my ($class, %o) = @_;
    my $self = bless {
        workers     => $o{workers} // 2,
        error_level => $o{error_level} // 'info',
        dir         => MWTest::new_dir('nginx'),
        port        => MWTest::free_port(),
        owner       => $$,
    }, $class;
    File::Path::make_path(map { "$self->{dir}/$_" }
        qw(logs conf tmp tmp/body tmp/proxy tmp/fastcgi tmp/uwsgi
           tmp/scgi dead));
    chmod 0700, "$self->{dir}/dead";
    # nginx loads a private copy of the module: a rebuild that rewrites
    # build/*.so in place must not crash the workers of a running test
    if (-f $MWTest::MODULE) {
        my $data = MWTest::slurp($MWTest::MODULE);
        MWTest::spew("$self->{dir}/conf/module.so", $data, 0755);
    }
    MWTest::spew("$self->{dir}/conf/app_secret",
                 $o{secret} // $MWTest::SECRET, 0600);
    return $self;
}

sub dir         { $_[0]{dir} }
sub port        { $_[0]{port} }
sub pid         { $_[0]{pid} }
sub secret_file { "$_[0]{dir}/conf/app_secret" }
sub dead_dir    { "$_[0]{dir}/dead" }
sub conf_file   { "$_[0]{dir}/conf/nginx.conf" }
sub error_log_file  { "$_[0]{dir}/logs/error.log" }
sub access_log_file { "$_[0]{dir}/logs/access.log" }

# A file inside the run dir (conf/NAME), mode 0600 unless given.
sub write_file {
    my ($self, $name, $content, $mode) = @_;
    my $path = $name =~ m{^/} ? $name : "$self->{dir}/conf/$name";
    MWTest::spew($path, $content, $mode // 0600);
    return $path;
}

sub _subst {
    my ($self, $s) = @_;
    return '' unless defined $s;
    $s =~ s/%DIR%/$self->{dir}/g;
    $s =~ s/%PORT%/$self->{port}/g;
    $s =~ s/%SECRET_FILE%/$self->secret_file/ge;
    return $s;
}

sub config_text {
    my ($self, %o) = @_;
    my $dir = $self->{dir};
    my $user = $> == 0 ? "user root;\n" : '';
    my $level = $o{error_level} // $self->{error_level};
    my $workers = $o{workers} // $self->{workers};
    my $load = exists $o{module} && !defined $o{module}
             ? '' : 'load_module '
                    . ($o{module} // "$self->{dir}/conf/module.so") . ";\n";
    my $main = $self->_subst($o{main_conf});
    my $http = $self->_subst($o{http_conf});
    my $server = $self->_subst($o{server_conf});
    my $servers = $self->_subst($o{more_servers});
    my $listen = $self->{port};
    return <<"CONF";
# written by t/lib/MWTest.pm
$load$user
worker_processes $workers;
daemon off;
master_process on;
pid $dir/logs/nginx.pid;
error_log $dir/logs/error.log $level;
$main
events {
    worker_connections 1024;
}

http {
    access_log $dir/logs/access.log;
    client_body_temp_path $dir/tmp/body;
    proxy_temp_path $dir/tmp/proxy;
    fastcgi_temp_path $dir/tmp/fastcgi;
    uwsgi_temp_path $dir/tmp/uwsgi;
    scgi_temp_path $dir/tmp/scgi;
    default_type text/plain;
    keepalive_timeout 0;
$http
    server {
        listen 127.0.0.1:$listen;
        server_name localhost;
$server
    }
$servers
}
CONF
}

sub write_config {
    my ($self, %o) = @_;
    $self->{conf_opts} = {%o};
    MWTest::spew($self->conf_file, $self->config_text(%o), 0644);
}

sub _run_capture {
    my (@cmd) = @_;
    my $pid = open my $fh, '-|';
    die "fork: $!" unless defined $pid;
    if (!$pid) {
        open STDERR, '>&', \*STDOUT;
        exec @cmd or POSIX::_exit(127);
    }
    local $/;
    my $out = <$fh>;
    close $fh;
    return ($? >> 8, $out // '');
}

# nginx -t; returns (exit status, output)
sub test_config {
    my ($self, %o) = @_;
    $self->write_config(%o);
    return _run_capture($MWTest::NGINX, '-t', '-p', "$self->{dir}/",
                        '-c', $self->conf_file);
}

# Starts nginx in the foreground of a forked child (daemon off) so that
# its pid is known at once.  Dies when it does not come up; the error log
# and the captured stderr are in the message.
sub start {
    my ($self, %o) = @_;
    die "already running" if $self->{pid};
    MWTest::register($self) unless $self->{registered}++;

    for my $attempt (1 .. 5) {
        $self->write_config(%o);
        my $mark = $self->log_mark;
        my $pid = fork;
        die "fork: $!" unless defined $pid;
        if (!$pid) {
            POSIX::setsid();
            open STDIN, '<', '/dev/null';
            open STDOUT, '>>', "$self->{dir}/logs/stderr.log";
            open STDERR, '>&', \*STDOUT;
            # MW_TEST_WRAP: a command nginx runs under, e.g.
            # "valgrind --log-file=/tmp/vg.%p" (a debugging aid: the
            # timings of some tests do not hold under it)
            my @wrap = split ' ', ($ENV{MW_TEST_WRAP} // '');
            exec(@wrap, $MWTest::NGINX, '-p', "$self->{dir}/", '-c',
                 $self->conf_file) or POSIX::_exit(127);
        }
        $self->{pid} = $pid;

        my $up = MWTest::wait_until(sub {
            return 'dead' if waitpid($pid, POSIX::WNOHANG()) == $pid;
            my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                PeerPort => $self->{port}, Proto => 'tcp', Timeout => 1);
            return $s ? 'up' : 0;
        }, 15);

        if ($up && $up eq 'up') {
            # wait for the workers so that the first request is served
            MWTest::wait_until(sub {
                my @w = $self->worker_pids;
                @w >= ($o{workers} // $self->{workers});
            }, 10);
            return $self;
        }

        my $err = $self->error_log_since($mark)
                . MWTest::slurp("$self->{dir}/logs/stderr.log");
        $self->_kill_all if !$up;
        $self->{pid} = undef;
        if ($err =~ /Address already in use/ && $attempt < 5) {
            $self->{port} = MWTest::free_port();
            next;
        }
        die "nginx did not start (" . ($up || 'timeout') . "):\n$err";
    }
}

# pids whose parent is the master: the workers (and the cache processes,
# which this configuration has none of)
sub worker_pids {
    my ($self) = @_;
    my $master = $self->{pid} or return ();
    my @pids;
    opendir my $dh, '/proc' or return ();
    for my $p (grep { /^\d+$/ } readdir $dh) {
        my $stat = MWTest::slurp("/proc/$p/stat") // next;
        # pid (comm) state ppid ...: comm may hold spaces or parens
        next unless $stat =~ /\)\s+\S+\s+(\d+)/;
        push @pids, $p if $1 == $master;
    }
    closedir $dh;
    @pids = sort { $a <=> $b } @pids;
    return @pids;
}

sub running {
    my ($self) = @_;
    return 0 unless $self->{pid};
    return kill(0, $self->{pid}) && waitpid($self->{pid}, POSIX::WNOHANG()) == 0;
}

# nginx -s reload, then waits until every old worker has exited and the
# new ones are up.  Optional new configuration in %o.  Returns 1, or 0
# when the old workers never went away (a refused configuration).
sub reload {
    my ($self, %o) = @_;
    $self->write_config(%{ $self->{conf_opts} }, %o) if %o;
    my @old = $self->worker_pids;
    my ($rc, $out) = _run_capture($MWTest::NGINX, '-p', "$self->{dir}/",
        '-c', $self->conf_file, '-s', 'reload');
    if ($rc != 0) {
        $self->{last_reload_output} = $out;
        return 0;
    }
    my %old = map { $_ => 1 } @old;
    my $want = $o{workers} // $self->{conf_opts}{workers} // $self->{workers};
    my $ok = MWTest::wait_until(sub {
        my @now = $self->worker_pids;
        return 0 if grep { $old{$_} } @now;
        return scalar(grep { !$old{$_} } @now) >= $want;
    }, 15);
    return $ok ? 1 : 0;
}

sub stop {
    my ($self) = @_;
    return unless $self->{pid};
    $self->_kill_all;
    $self->{pid} = undef;
}

sub _kill_all {
    my ($self) = @_;
    my $pid = $self->{pid} or return;
    my @workers = $self->worker_pids;
    kill 'TERM', $pid;                  # fast shutdown
    my $gone = MWTest::wait_until(sub {
        waitpid($pid, POSIX::WNOHANG()) == $pid || !kill(0, $pid)
    }, 5);
    if (!$gone) {
        push @workers, $self->worker_pids;
        kill 'KILL', $pid;
        waitpid $pid, 0;
    }
    # a worker must never outlive the test
    for my $w (@workers) {
        kill 'KILL', $w if kill 0, $w;
    }
}

# --- logs

sub log_mark { -s $_[0]->error_log_file || 0 }

sub error_log { MWTest::slurp($_[0]->error_log_file) // '' }

sub error_log_since {
    my ($self, $mark) = @_;
    my $all = $self->error_log;
    return substr($all, $mark // 0);
}

sub access_log { MWTest::slurp($_[1] // $_[0]->access_log_file) // '' }

# every file under logs/ (error, access, custom logs), concatenated
sub all_logs {
    my ($self) = @_;
    my $s = '';
    opendir my $dh, "$self->{dir}/logs" or return '';
    for my $f (sort readdir $dh) {
        next unless -f "$self->{dir}/logs/$f";
        next if $f eq 'nginx.pid';
        $s .= MWTest::slurp("$self->{dir}/logs/$f") // '';
    }
    return $s;
}

# Waits until the error log (from $mark on) matches $re; returns the
# text read last (so that a failing test prints what was there).
sub wait_error_log {
    my ($self, $re, $mark, $timeout) = @_;
    my $text = '';
    MWTest::wait_until(sub {
        $text = $self->error_log_since($mark);
        $text =~ $re;
    }, $timeout // 5);
    return $text;
}

# --- requests

sub request { my $self = shift; MWTest::http_request($self->{port}, @_) }

sub get {
    my ($self, $path, %o) = @_;
    return $self->request(method => 'GET', path => $path, %o);
}

sub handshake {
    my ($self, %q) = @_;
    my $path = delete $q{path} // '/webhook';
    my @q;
    for my $k (qw(hub.mode hub.verify_token hub.challenge)) {
        push @q, "$k=" . _uri_escape($q{$k}) if defined $q{$k};
    }
    return $self->get($path . '?' . join('&', @q));
}

sub _uri_escape {
    my ($s) = @_;
    $s =~ s/([^A-Za-z0-9_.~-])/sprintf '%%%02X', ord $1/ge;
    return $s;
}

sub post {
    my ($self, $path, $body, %o) = @_;
    return $self->request(method => 'POST', path => $path, body => $body,
        headers => ['Content-Type' => 'application/json',
                    @{ $o{headers} // [] }], %o);
}

# A delivery as Meta sends it: POST, JSON, X-Hub-Signature-256 over the
# exact bytes with $o{secret} (default the test secret).
sub deliver {
    my ($self, $body, %o) = @_;
    my $path = delete $o{path} // '/webhook';
    my $sig = MWTest::sig_header($body, delete $o{secret});
    my $extra = delete $o{headers} // [];
    return $self->post($path, $body,
        headers => ['X-Hub-Signature-256' => $sig,
                    'User-Agent' => 'facebookexternalua', @$extra], %o);
}

1;
