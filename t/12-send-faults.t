#!/usr/bin/perl
# The send path when things go wrong: the Graph API too slow (504), down
# (502), closing the connection without an answer (502, never resent); a
# client that goes away mid-call; nginx -s reload and a graceful worker
# shutdown while calls are in flight; the access token in no log.

use strict;
use warnings;
use Test::More;
use lib 't/lib';
use MWTest;
use MWTest::Meta;
use MWTest::Send;
use IO::Socket::INET;
use POSIX ();
use Time::HiRes ();

plan skip_all => "no module at $MODULE (run make)" unless -f $MODULE;

# /t1/ (a 1 s Graph timeout) and /down/ (a refused port) from fault_setup
my $s = fault_setup(
    error_level => 'debug',             # the token must not show even here
    timeout => '5s', connect_timeout => '1s',
    server_extra => <<'EOF',
location /one/ {
    meta_webhook_send;
    meta_webhook_access_token_file %DIR%/conf/access_token;
    meta_webhook_graph_url %GRAPH_URL%;
    meta_webhook_graph_timeout 5s;
    meta_webhook_thread_pool one;
}
EOF
    main_conf => "thread_pool one threads=1;\n",
);
my $ng = $s->{ng};
my $g = $s->{graph};

sub conv  { (status_of($s) // {})->{conversations} // {} }
sub sends { (status_of($s) // {})->{sends} // {} }
sub counted {
    my ($c) = @_;
    my $j = session_of($s, $c);
    return $j ? ($j->{conversation_counted} ? 1 : 0) : 'no answer';
}

# a client in the background: bg(sub { ... return "result" }) -> handle;
# collect($h) waits (bounded) and returns the result
my $BGDIR = MWTest::new_dir('bg');
my $BGN = 0;
sub bg {
    my ($code) = @_;
    my $file = "$BGDIR/res-" . ++$BGN;
    my $pid = fork;
    die "fork: $!" unless defined $pid;
    if (!$pid) {
        my $res = eval { $code->() };
        $res = "error: $@" unless defined $res;
        MWTest::spew($file, $res);
        POSIX::_exit(0);
    }
    return { pid => $pid, file => $file };
}
sub collect {
    my ($h, $timeout) = @_;
    my $done = wait_until(sub {
        waitpid($h->{pid}, POSIX::WNOHANG()) != 0 }, $timeout // 15);
    if (!$done) { kill 'KILL', $h->{pid}; waitpid $h->{pid}, 0 }
    return slurp($h->{file}) // 'no result';
}
sub answer_of {
    my ($r) = @_;
    return $r->status ? $r->status . ' ' . $r->body
                      : '0 ' . ($r->error_message // 'no answer');
}

# --- the Graph API too slow: 504, nothing counted

my $T1 = '/t1/' . PNID . '/messages';          # graph_timeout 1s

{
    my $c = new_contact();
    open_window($s, $c);
    my $before = sends();
    $g->set(delay => 2.5);
    my $t0 = Time::HiRes::time();
    my $r = graph_send($s, PNID, text_req($c, 'slow'), path => $T1);
    my $took = Time::HiRes::time() - $t0;
    graph_error_is($r, 504, undef, 'Graph slower than the timeout');
    cmp_ok $took, '<', 2.3, 'timeout: answered after the 1 s timeout, '
        . 'not after the fake\'s 2.5 s';
    is $g->count, 1, 'timeout: the fake got the call once (not retried)';
    is conv()->{used}, 0, 'timeout: the conversation was rolled back';
    is counted($c), 0, 'timeout: the session is not counted';
    my $after = sends();
    is $after->{graph_timeouts}, ($before->{graph_timeouts} // 0) + 1,
        'status: graph_timeouts +1';
    is $after->{conversations_rolled_back},
        ($before->{conversations_rolled_back} // 0) + 1,
        'status: conversations_rolled_back +1';

    # a business-initiated template timing out: given back too
    $r = graph_send($s, PNID, template_req(new_contact()), path => $T1);
    is $r->status, 504, 'timeout on a template: 504';
    is conv()->{business_initiated_today}, 0,
        'timeout on a template: not in the daily count';
    is conv()->{used}, 0, 'timeout on a template: not in used';

    $g->set(delay => 0);
    $r = graph_send($s, PNID, text_req($c, 'fast again'), path => $T1);
    is $r->status, 200, 'Graph fast again: sent' or diag $r->summary;
    is conv()->{used}, 1, 'Graph fast again: counted';
}

# --- the Graph API down: 502

{
    my $c = new_contact();
    open_window($s, $c);
    my $before = sends();
    my $used = conv()->{used};
    my $r = graph_send($s, PNID, text_req($c, 'nobody there'),
                       path => '/down/' . PNID . '/messages');
    graph_error_is($r, 502, undef, 'Graph unreachable (port closed)');
    is conv()->{used}, $used, 'unreachable: nothing counted';
    is counted($c), 0, 'unreachable: the session is not counted';
    is sends()->{graph_failures}, ($before->{graph_failures} // 0) + 1,
        'status: graph_failures +1';
}

# --- the Graph API closes the connection without an answer: 502, and
#     the message is not sent a second time behind the caller's back

{
    my $c = new_contact();
    open_window($s, $c);
    my $p = '/one/' . PNID . '/messages';
    my $r = graph_send($s, PNID, text_req($c, 'warm up'), path => $p);
    is $r->status, 200, 'one thread: a first send (a kept-alive connection)'
        or diag $r->summary;

    $g->set(mode => 'close');
    my $n = $g->count;
    $r = graph_send($s, PNID, text_req($c, 'cut off'), path => $p);
    graph_error_is($r, 502, undef,
        'Graph reads the request and closes (reused connection)');
    my @got = grep { $_->{n} > $n } $g->requests;
    ok @got && $got[0]{conn_seq} > 1,
        'the first try went over the kept-alive connection';
    is scalar @got, 1, 'closed without an answer on a reused connection: '
        . 'the fake got the message exactly once (no automatic resend)'
        or diag join "\n", map { "request $_->{n}: connection $_->{conn}, "
            . "request #$_->{conn_seq} on it, body $_->{body}" } @got;

    $n = $g->count;
    $r = graph_send($s, PNID, text_req($c, 'cut off again'), path => $p);
    is $r->status, 502, 'closed without an answer (fresh connection): 502';
    is $g->count - $n, 1, 'fresh connection: sent exactly once';
    $g->set(mode => 'ok');
    $r = graph_send($s, PNID, text_req($c, 'back'), path => $p);
    is $r->status, 200, 'then the Graph answers again: 200';
}

# --- a client that goes away mid-call

sub vanish {
    my ($body, $loc) = @_;
    my $sock = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
        PeerPort => $ng->port, Proto => 'tcp') or die "connect: $!";
    my $req = 'POST /' . ($loc // 'graph') . '/' . PNID
            . "/messages HTTP/1.1\r\n"
            . "Host: localhost\r\nContent-Type: application/json\r\n"
            . 'Content-Length: ' . length($body) . "\r\n\r\n$body";
    syswrite $sock, $req;
    return $sock;
}

{
    my $mark = $ng->log_mark;
    my $c = new_contact();
    open_window($s, $c);
    my $before = sends();
    my $used = conv()->{used};
    my $n = $g->count;
    $g->set(delay => 2);
    my $t0 = Time::HiRes::time();
    my $sock = vanish(text_req($c, 'nobody waits for this'));
    ok $g->wait_count($n + 1, 5) > $n, 'disconnect: the call is in flight';
    Time::HiRes::sleep(0.5 - (Time::HiRes::time() - $t0))
        if Time::HiRes::time() - $t0 < 0.5;
    close $sock;                        # the client gives up after 0.5 s

    ok wait_until(sub { (sends()->{accepted} // 0) > ($before->{accepted} // 0) },
                  6), 'disconnect: the call completed in nginx';
    ok $ng->running, 'disconnect: nginx is running';
    is $g->count - $n, 1, 'disconnect: the fake got exactly one request';
    is conv()->{used}, $used + 1,
        'disconnect: Meta accepted it, so it stays counted';
    is counted($c), 1, 'disconnect: the session is counted';
    $g->set(delay => 0);
    my $r = graph_send($s, PNID, text_req($c, 'next one'));
    is $r->status, 200, 'disconnect: a later request works'
        or diag $r->summary;
    no_crash($ng, 'disconnect: no crash, no alert', $mark);
}
{
    # the client goes away and then the Graph times out: still given back
    my $mark = $ng->log_mark;
    my $c = new_contact();
    open_window($s, $c);
    my $before = sends();
    my $used = conv()->{used};
    my $n = $g->count;
    $g->set(delay => 2.5);
    my $sock = vanish(text_req($c, 'gone, then timed out'), 't1');
    ok $g->wait_count($n + 1, 5) > $n, 'disconnect + timeout: in flight';
    close $sock;
    ok wait_until(sub {
            (sends()->{graph_timeouts} // 0) > ($before->{graph_timeouts} // 0)
        }, 6), 'disconnect + timeout: the timeout was seen';
    is conv()->{used}, $used, 'disconnect + timeout: rolled back';
    is counted($c), 0, 'disconnect + timeout: not counted';
    $g->set(delay => 0);
    no_crash($ng, 'disconnect + timeout: no crash', $mark);
}

# --- nginx -s reload while calls are in flight

{
    my $mark = $ng->log_mark;
    my @c = map { new_contact() } 1 .. 3;
    open_window($s, $_) for @c;
    my $before = sends();
    my $used = conv()->{used};
    my $n = $g->count;
    $g->set(delay => 1.5);
    my @h = map { my $c = $_; bg(sub {
        answer_of(graph_send($s, PNID, text_req($c, 'over a reload'),
                             timeout => 15)) }) } @c;
    is $g->wait_count($n + 3, 5), $n + 3, 'reload: 3 calls in flight';
    ok $ng->reload, 'nginx -s reload: the old worker finished and left';
    my @res = map { collect($_) } @h;
    $g->set(delay => 0);
    my @answers = map { $_->{answer} } grep { $_->{n} > $n } $g->requests;
    for my $i (0 .. 2) {
        my ($st, $body) = split / /, $res[$i], 2;
        is $st, 200, "reload: call $i answered 200" or diag $res[$i];
        ok defined $body && (grep { $_ eq $body } @answers),
            "reload: call $i got Meta's answer (its message id)";
    }
    is $g->count - $n, 3, 'reload: no call sent twice';
    my $after = sends();
    is $after->{accepted}, ($before->{accepted} // 0) + 3,
        'reload: the counters kept, and the 3 accepted';
    is conv()->{used}, $used + 3, 'reload: the conversations counted once each';
    my $r = graph_send($s, PNID, text_req($c[0], 'after the reload'));
    is $r->status, 200, 'reload: the new worker sends' or diag $r->summary;
    no_crash($ng, 'reload: no crash, no alert', $mark);
}

# --- the access token in no log (error_log debug), before the end

{
    my $r = graph_send($s, PNID, 'not json');     # a refusal, logged
    my $all = $ng->all_logs;
    ok length $all > 1000, 'the logs hold something (debug level)';
    absent_from($all, $s->{token}, 'the access token appears in no log');
    absent_from($all, substr($s->{token}, 0, 24),
                'not even its first 24 characters');
}

# --- a graceful shutdown (nginx -s quit) while a call is in flight

{
    my $mark = $ng->log_mark;
    my $c = new_contact();
    open_window($s, $c);
    my $n = $g->count;
    $g->set(delay => 1.5);
    my $h = bg(sub {
        answer_of(graph_send($s, PNID, text_req($c, 'over a quit'),
                             timeout => 15)) });
    is $g->wait_count($n + 1, 5), $n + 1, 'quit: a call in flight';
    my $master = $ng->pid;
    my ($rc, $out) = MWTest::Nginx::_run_capture($NGINX, '-p', $ng->dir . '/',
        '-c', $ng->conf_file, '-s', 'quit');
    is $rc, 0, 'nginx -s quit' or diag $out;
    my $res = collect($h);
    my ($st, $body) = split / /, $res, 2;
    is $st, 200, 'quit: the call in flight was answered 200' or diag $res;
    my ($req) = grep { $_->{n} > $n } $g->requests;
    ok $req && defined $body && $body eq ($req->{answer} // ''),
        "quit: with Meta's answer";
    ok wait_until(sub { waitpid($master, POSIX::WNOHANG()) == $master
                        || !kill(0, $master) }, 10),
        'quit: nginx exited';
    $ng->{pid} = undef;
    is $g->count - $n, 1, 'quit: sent once';
    no_crash($ng, 'quit: no crash, no alert', $mark);
    my $all = $ng->all_logs;
    absent_from($all, $s->{token}, 'after everything: the token in no log');
}

done_testing;
