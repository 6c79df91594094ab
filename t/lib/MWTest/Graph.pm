package MWTest::Graph;

# A fake Graph API (Meta's send-message endpoint) for the send path: a
# forked Perl HTTP/1.1 server on 127.0.0.1, any free port.  Every
# connection is served by its own forked child, so concurrent calls,
# slow answers and keep-alive connections (libcurl reuses its handle's
# connection) all work at once.
#
# Every request is recorded, before it is answered, as
#   DIR/req-NNNNNN.head   request line and header lines, as received
#   DIR/req-NNNNNN.body   the exact body bytes
#   DIR/req-NNNNNN.resp   what was (or will be) answered: status line
#                         "STATUS\n" then the body; "close" for none
#   DIR/req-NNNNNN.conn   "PID K": the connection (its child's pid) and
#                         the request's rank on it (K > 1: kept alive)
# numbered in arrival order across all connections (an O_EXCL claim).
#
# The answer is chosen per request from a control file that the test
# changes at run time with ->set:
#   mode => 'ok'      200, Meta's answer: {"messaging_product":"whatsapp",
#                     "contacts":[{"input":TO,"wa_id":DIGITS}],
#                     "messages":[{"id":"wamid.<unique>"}]}
#   mode => 'error'   Meta's error body with status (default 400) and
#                     code (default 131026), e.g. code 100, 131047
#   mode => 'raw'     status and body exactly as given
#   mode => 'close'   read the request, then close the connection without
#                     a byte of answer
#   delay => SECONDS  wait that long before answering (any mode)
#   keepalive => 0    answer "Connection: close" (default: keep alive)
#
#   my $g = MWTest::Graph->start;
#   ... meta_webhook_graph_url $g->url ...
#   $g->set(mode => 'error', code => 131026);
#   my @r = $g->requests;   # [{method, path, headers, body, answer...}]

use strict;
use warnings;

use Fcntl qw(O_CREAT O_EXCL O_WRONLY);
use JSON::PP ();
use POSIX ();
use Time::HiRes ();

use MWTest::Server;

use parent 'MWTest::Owned';       # stop() when its owner is done

my $JSON = JSON::PP->new->canonical;

our %ERRORS = (
    100    => [400, 'Invalid parameter', 'OAuthException'],
    131026 => [400, 'Message undeliverable', 'OAuthException'],
    131047 => [400, 'Re-engagement message', 'OAuthException'],
    131009 => [400, 'Parameter value is not valid', 'OAuthException'],
    190    => [401, 'Invalid OAuth access token - Cannot parse access token',
               'OAuthException'],
    1      => [500, 'An unknown error occurred', 'OAuthException'],
    2      => [503, 'Service temporarily unavailable', 'OAuthException'],
    130429 => [429, 'Rate limit hit', 'OAuthException'],
);

# Meta's error answer for $code: (status, body bytes)
sub error_body {
    my ($code, %o) = @_;
    my $e = $ERRORS{$code} // [400, 'Error', 'OAuthException'];
    my $status = $o{status} // $e->[0];
    my $body = '{"error":{"message":"(#' . $code . ') ' . $e->[1]
        . '","type":"' . $e->[2] . '","code":' . $code
        . ',"error_data":{"messaging_product":"whatsapp","details":"'
        . ($o{details} // "fake Graph: error $code") . '"},'
        . '"fbtrace_id":"AbCdEfGhIjKlMnOp' . $code . '"}}';
    return ($status, $body);
}

sub start {
    my ($class, %o) = @_;
    my $dir = MWTest::new_dir('graph');
    my $listen = MWTest::Server::listen_local('graph', 256);
    my $self = bless { dir => $dir, port => $listen->sockport,
                       owner => $$, version => $o{version} // 'v23.0' },
                     $class;
    $self->{control} = {};
    $self->set(mode => 'ok', delay => 0, keepalive => 1, %o);
    # a child per connection (concurrent and kept-alive calls), all in
    # the server's own process group: stop() kills them at once, whatever
    # they are doing
    $self->{pid} = MWTest::Server::spawn($listen,
        sub { _serve_connection($_[0], $dir) }, fork_each => 1, group => 1);
    MWTest::register($self);
    return $self;
}

sub port { $_[0]{port} }
sub dir  { $_[0]{dir} }

# the base URL for meta_webhook_graph_url, with the version segment
sub url {
    my ($self) = @_;
    return "http://127.0.0.1:$self->{port}/$self->{version}";
}

# set(mode => 'error', code => 100, status => 400, delay => 2.5, ...);
# merged into the current control; giving a mode forgets the previous
# mode's code, status, body and details (delay and keepalive stay).
sub set {
    my ($self, %o) = @_;
    my %cur = %{ $self->{control} };
    # a new mode starts from its own defaults
    delete @cur{qw(code status body details content_type)}
        if defined $o{mode};
    %cur = (%cur, %o);
    $self->{control} = \%cur;
    MWTest::spew("$self->{dir}/control", $JSON->encode(\%cur));
}

sub _numbers {
    my ($self) = @_;
    opendir my $dh, $self->{dir} or return ();
    my @n = sort { $a <=> $b } map { /^req-(\d+)\.head$/ ? $1 : () }
            readdir $dh;
    closedir $dh;
    return @n;
}

# requests recorded so far
sub count { scalar $_[0]->_numbers }

# waits (bounded) until at least $n requests were recorded; returns the
# count
sub wait_count {
    my ($self, $n, $timeout) = @_;
    my $c = 0;
    MWTest::wait_until(sub { ($c = $self->count) >= $n }, $timeout // 5);
    return $c;
}

# [{n, method, path, version, headers => {lc name => value},
#   header_lines => [[name, value], ...], body, status, answer,
#   conn (an id of the connection), conn_seq (1: its first request)}]
# in arrival order; status/answer are undef while not yet decided, and
# status is 'close' for a connection closed without an answer
sub requests {
    my ($self) = @_;
    my @r;
    for my $n ($self->_numbers) {
        my $base = sprintf '%s/req-%06d', $self->{dir}, $n;
        my $head = MWTest::slurp("$base.head") // '';
        my ($line, @lines) = split /\r\n/, $head;
        my ($method, $path, $version) = split / /, $line // '';
        my (%h, @hl);
        for (@lines) {
            my ($k, $v) = /^([^:]+):[ \t]*(.*?)[ \t]*$/ or next;
            push @hl, [$k, $v];
            $h{ lc $k } = exists $h{ lc $k } ? "$h{lc $k}, $v" : $v;
        }
        my $resp = MWTest::slurp("$base.resp");
        my ($status, $answer);
        if (defined $resp) {
            ($status, $answer) = split /\n/, $resp, 2;
        }
        my ($conn, $conn_seq) = split / /, MWTest::slurp("$base.conn") // '';
        push @r, { n => $n, method => $method, path => $path,
                   conn => $conn, conn_seq => $conn_seq,
                   version => $version, headers => \%h,
                   header_lines => \@hl,
                   body => MWTest::slurp("$base.body") // '',
                   status => $status, answer => $answer };
    }
    return @r;
}

sub last_request { ($_[0]->requests)[-1] }

# forget what was recorded so far (numbering goes on)
sub clear {
    my ($self) = @_;
    opendir my $dh, $self->{dir} or return;
    my @f = grep { /^req-\d+\.(?:head|body|resp|conn)$/ } readdir $dh;
    closedir $dh;
    # the .claim files stay: they keep the numbering going
    unlink map { "$self->{dir}/$_" } @f;
}

sub stop {
    my ($self) = @_;
    my $pid = delete $self->{pid} or return;
    kill 'TERM', -$pid;
    my $gone = MWTest::wait_until(sub {
        waitpid($pid, POSIX::WNOHANG()) == $pid }, 3);
    kill 'KILL', -$pid;                 # the connection children
    if (!$gone) { kill 'KILL', $pid; waitpid $pid, 0 }
}


# --- the server (children)

# the next number: the first free claim file after the highest one
sub _claim {
    my ($dir) = @_;
    my $max = 0;
    if (opendir my $dh, $dir) {
        for (readdir $dh) { $max = $1 if /^req-(\d+)\.claim$/ && $1 > $max }
        closedir $dh;
    }
    for (my $n = $max + 1; ; $n++) {
        my $f = sprintf '%s/req-%06d.claim', $dir, $n;
        if (sysopen my $fh, $f, O_CREAT | O_EXCL | O_WRONLY) {
            close $fh;
            return $n;
        }
        die "claim $f: $!" unless $!{EEXIST};
    }
}

my $WSEQ = 0;

sub _answer_ok {
    my ($body, $n) = @_;
    my $req = eval { JSON::PP->new->utf8->decode($body) };
    my $to = ref $req eq 'HASH' && defined $req->{to} && !ref $req->{to}
           ? $req->{to} : '';
    (my $wa = $to) =~ s/\D//g;
    my $id = sprintf 'wamid.HBgLFAKE%06d%05d%04dAA%s=', $n, $$ % 100000,
                     ++$WSEQ, join '', map { ('A' .. 'Z')[rand 26] } 1 .. 6;
    my $j = JSON::PP->new->utf8->canonical->allow_nonref;
    return (200, '{"messaging_product":"whatsapp","contacts":[{"input":'
        . $j->encode("$to") . ',"wa_id":'
        . $j->encode("$wa") . '}],"messages":[{"id":"' . $id . '"}]}');
}

sub _serve_connection {
    my ($c, $dir) = @_;
    my $buf = '';
    my $on_conn = 0;
    while (1) {
        # an idle keep-alive connection waits up to 60 s
        my ($head, $body) = MWTest::Server::read_request($c, \$buf,
            timeout => 60, continue => 1);
        last unless defined $head;
        my $n = _claim($dir);
        my $base = sprintf '%s/req-%06d', $dir, $n;
        MWTest::spew("$base.body", $body);
        my $ctl = eval { JSON::PP->new->decode(
                             MWTest::slurp("$dir/control") // '{}') } || {};
        my $mode = $ctl->{mode} // 'ok';
        my ($status, $rbody);
        if ($mode eq 'ok') {
            ($status, $rbody) = _answer_ok($body, $n);
        } elsif ($mode eq 'error') {
            ($status, $rbody) = error_body($ctl->{code} // 131026,
                status => $ctl->{status}, details => $ctl->{details});
        } elsif ($mode eq 'raw') {
            ($status, $rbody) = ($ctl->{status} // 200, $ctl->{body} // '');
        } else {
            $status = 'close';
            $rbody = '';
        }
        MWTest::spew("$base.resp", "$status\n$rbody");
        MWTest::spew("$base.conn", "$$ " . ++$on_conn);
        # the head last: a request is counted once it is fully recorded
        MWTest::spew("$base.head", $head);

        Time::HiRes::sleep($ctl->{delay}) if $ctl->{delay};
        if ($status eq 'close') {
            last;
        }
        my $keep = $ctl->{keepalive} // 1;
        $keep = 0 if $head =~ /^connection:\s*close/im;
        my $ct = $ctl->{content_type} // 'application/json; charset=UTF-8';
        my $resp = "HTTP/1.1 $status "
                 . ($status == 200 ? 'OK' : 'Error') . "\r\n"
                 . "Content-Type: $ct\r\n"
                 . "facebook-api-version: v23.0\r\n"
                 . "x-fb-trace-id: FakeTrace$n\r\n"
                 . 'Content-Length: ' . length($rbody) . "\r\n"
                 . ($keep ? '' : "Connection: close\r\n")
                 . "\r\n" . $rbody;
        my $off = 0;
        while ($off < length $resp) {
            my $w = syswrite $c, $resp, length($resp) - $off, $off;
            last unless $w;
            $off += $w;
        }
        last unless $keep;
    }
    close $c;
}

1;
