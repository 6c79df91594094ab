#!/usr/bin/perl
# Hostile and odd bodies, correctly signed (whoever holds the secret, or
# Meta on a bad day): nothing crashes, nothing ambiguous reaches the
# application, nothing unescaped reaches a log.

use strict;
use warnings;
use utf8;
use Test::More;
use lib 't/lib';
use MWTest;
use MWTest::Meta;

plan skip_all => "no module at $MODULE (run make)" unless -f $MODULE;

my ($ng, $inbox) = setup(
    http_conf => 'large_client_header_buffers 4 32k;',
    extra => 'meta_webhook_dead_letter_path %DIR%/dead;',
);

my $ENV_HEAD = '{"object":"whatsapp_business_account","entry":[{"id":"'
             . WABA_ID . '","changes":[{"field":"messages","value":'
             . '{"messaging_product":"whatsapp","metadata":'
             . '{"display_phone_number":"' . DISPLAY . '","phone_number_id":"'
             . PNID . '"},"messages":[';
my $ENV_TAIL = ']}}]}]}';

# a raw message object (JSON text) in a valid envelope
sub wrap { $ENV_HEAD . join(',', @_) . $ENV_TAIL }

sub raw_msg {
    my (%o) = @_;
    my $id = $o{id} // wamid();
    my $ts = $o{ts} // '"' . (time - 60) . '"';
    my $from = $o{from} // '"' . new_contact() . '"';
    my $rest = $o{rest} // '"type":"text","text":{"body":"hi"}';
    return ($id, qq({"from":$from,"id":"$id","timestamp":$ts,$rest}));
}

# Delivers; returns (response, [events of this delivery]).
sub send_raw {
    my ($body, %o) = @_;
    $inbox->clear;
    my $r = $ng->deliver($body, %o);
    my @req = $inbox->raw_requests;
    my @ev;
    for (@req) {
        my $j = json_decode($_->{body});
        push @ev, @{ $j->{events} } if ref $j eq 'HASH';
    }
    return ($r, \@ev, \@req);
}

sub alive {
    my ($name) = @_;
    my $r = $ng->handshake('hub.mode' => 'subscribe',
        'hub.verify_token' => $TOKEN, 'hub.challenge' => '31337');
    is $r->body, '31337', "$name: nginx still answers";
}

sub dead_lettered {
    my ($name, $body) = @_;
    my ($r, $ev) = send_raw($body);
    is $r->status, 200, "$name: 200" or diag $r->summary;
    is $r->header('x-mw-result'), 'dead_letter', "$name: dead letter";
    is scalar @$ev, 0, "$name: nothing handed off";
    alive($name);
}

# --- depth

dead_lettered('100000 nested arrays', '[' x 100000 . ']' x 100000);
dead_lettered('100000 nested objects',
    '{"a":' x 100000 . '1' . '}' x 100000);
{
    my (undef, $m) = raw_msg(rest => '"type":"text","text":{"body":"x"},'
        . '"deep":' . '[' x 100000 . ']' x 100000);
    dead_lettered('100000 nested arrays inside a message', wrap($m));
}
dead_lettered('100000 unclosed brackets', '[' x 100000);
{
    my ($id, $m) = raw_msg(rest => '"type":"text","text":{"body":"x"},'
        . '"deep":' . '[' x 30 . ']' x 30);
    my ($r, $ev) = send_raw(wrap($m));
    is $r->header('x-mw-result'), 'new', 'nesting of 30 levels: accepted';
    is $ev->[0]{id}, $id, 'nesting of 30 levels: handed off';
}

# --- duplicate keys: ambiguous, never guessed

dead_lettered('duplicate "object" key',
    '{"object":"whatsapp_business_account","object":"page","entry":[]}');
{
    my (undef, $m) = raw_msg(rest => '"type":"text","text":{"body":"benign",'
        . '"body":"4111 1111 1111 1111"}');
    my $body = wrap($m);
    dead_lettered('duplicate "body" key in a text', $body);
    my @files = glob($ng->dead_dir . '/*');
    my $all = join '', map { slurp($_) } @files;
    ok index($all, '4111 1111 1111 1111') < 0,
        'duplicate keys: the hidden card number is masked in the dead letter';
}
{
    my (undef, $m) = raw_msg(rest => '"type":"text","type":"reaction",'
        . '"text":{"body":"x"}');
    dead_lettered('duplicate "type" key', wrap($m));
}

# --- encodings

{
    my (undef, $m) = raw_msg(rest => qq("type":"text","text":{"body":"a\xff\xfeb"}));
    dead_lettered('invalid UTF-8 bytes', wrap($m));
    (undef, $m) = raw_msg(rest => qq("type":"text","text":{"body":"a\xc0\xafb"}));
    dead_lettered('overlong UTF-8', wrap($m));
    (undef, $m) = raw_msg(rest => '"type":"text","text":{"body":"a\ud800b"}');
    dead_lettered('lone high surrogate', wrap($m));
    (undef, $m) = raw_msg(rest => '"type":"text","text":{"body":"a\udc00b"}');
    dead_lettered('lone low surrogate', wrap($m));
    dead_lettered('byte order mark', "\xef\xbb\xbf" . wrap((raw_msg())[1]));
    (undef, $m) = raw_msg(rest => '"type":"text","text":{"body":"x"},"n":NaN');
    dead_lettered('NaN', wrap($m));
}
{
    # a pair of surrogates is one character
    my ($id, $m) = raw_msg(rest =>
        '"type":"text","text":{"body":"smile \ud83d\ude00"}');
    my ($r, $ev, $req) = send_raw(wrap($m));
    is $r->header('x-mw-result'), 'new', 'surrogate pair: accepted';
    is $ev->[0]{content}{body}, "smile \x{1f600}", 'surrogate pair: decoded';
    like $req->[0]{body}, qr/smile \xf0\x9f\x98\x80/,
        'surrogate pair: handed on as UTF-8';
}
{
    my ($id, $m) = raw_msg(rest => '"type":"text","text":{"body":"a\u0000b"}');
    my ($r, $ev, $req) = send_raw(wrap($m));
    is $r->status, 200, '\u0000 in a text: 200';
    is $r->header('x-mw-result'), 'new', '\u0000 in a text: handed off';
    is $ev->[0]{content}{body}, "a\x00b", '\u0000 kept inside the string';
    ok index($req->[0]{body}, "\x00") < 0, 'no raw NUL byte to the inbox';
    like $req->[0]{body}, qr/a\\u0000b/, 'escaped again as \u0000';
}
{
    my ($id, $m) = raw_msg(rest =>
        '"type":"text","text":{"body":"4111\u0000 1111 1111 1111 1111"}');
    my ($r, $ev) = send_raw(wrap($m));
    is $r->status, 200, 'NUL inside a card-like text: 200';
}
{
    # escapes of ASCII characters in keys and values are the same text
    my $id = wamid();
    my $body = '{"\u006fbject":"whatsapp_business_account","entry":[{"id":"'
        . WABA_ID . '","changes":[{"field":"\u006dessages","value":'
        . '{"messaging_product":"whatsapp","metadata":{"phone_number_id":"'
        . PNID . '"},"messages":[{"from":"' . new_contact() . '","id":"'
        . $id . '","timestamp":"' . (time - 60) . '","type":"t\u0065xt",'
        . '"text":{"b\u006fdy":"\u0068i \u002f \u0040"}}]}}]}]}';
    my ($r, $ev) = send_raw($body);
    is $r->header('x-mw-result'), 'new', 'escaped keys: a valid delivery';
    is $ev->[0]{type}, 'text', 'escaped keys: type text';
    is $ev->[0]{content}{body}, 'hi / @', 'escaped keys: body decoded';
}

# --- timestamps

sub ts_case {
    my ($name, $ts_json, $want_ts, $want_from) = @_;
    my $t0 = time;
    my ($id, $m) = raw_msg(ts => $ts_json);
    my ($r, $ev) = send_raw(wrap($m));
    is $r->status, 200, "timestamp $name: 200" or diag $r->summary;
    is $r->header('x-mw-result'), 'new', "timestamp $name: handed off";
    my $e = $ev->[0] // {};
    is $e->{timestamp}, $want_ts, "timestamp $name: event timestamp "
        . ($want_ts // 'null');
    ok exists $e->{timestamp}, "timestamp $name: member present";
    my $exp = $e->{window}{expires_at} // 0;
    if (defined $want_from) {
        is $exp, $want_from + 86400, "timestamp $name: window from it";
    } else {
        # a second of slack: the clock read here and nginx's cached one
        ok $exp >= $t0 - 1 + 86400 && $exp <= time + 86400,
            "timestamp $name: window from the arrival" or diag $exp;
    }
}

my $past = time - 7200;
ts_case('as a JSON number', $past, $past, $past);
ts_case('as a JSON real', "$past.0", $past, $past);
ts_case('junk string', '"abc"', undef, undef);
ts_case('negative', '"-5"', undef, undef);
ts_case('negative number', '-5', undef, undef);
ts_case('fraction in a string', qq("$past.5"), undef, undef);
ts_case('empty string', '""', undef, undef);
ts_case('20 digits', '"99999999999999999999"', undef, undef);
ts_case('integer beyond 2^64', '18446744073709551616999', undef, undef);
ts_case('null', 'null', undef, undef);
ts_case('object', '{"t":1}', undef, undef);

# --- big integers elsewhere do not sink the batch

{
    my ($id, $m) = raw_msg(rest => '"type":"text","text":{"body":"big",'
        . '"n":18446744073709551616},"extra":-92233720368547758080');
    my ($r, $ev) = send_raw(wrap($m));
    is $r->header('x-mw-result'), 'new', 'integers beyond 2^63: handed off';
    is $ev->[0]{content}{body}, 'big', 'integers beyond 2^63: content';
    cmp_ok abs(($ev->[0]{content}{n} // 0) - 1.8446744073709552e19), '<', 1e5,
        'integers beyond 2^63: kept as a number';
}

# --- shapes

{
    my ($r, $ev) = send_raw(encode(obj(object => 'whatsapp_business_account',
        entry => [ obj(id => WABA_ID, changes => []) ])));
    is $r->status, 200, 'changes []: 200';
    isnt $r->header('x-mw-result'), 'dead_letter', 'changes []: a delivery';
    is $inbox->count, 0, 'changes []: nothing to hand off';

    ($r, $ev) = send_raw(encode(obj(object => 'whatsapp_business_account',
        entry => [])));
    is $r->status, 200, 'entry []: 200';
    is $inbox->count, 0, 'entry []: nothing to hand off';

    ($r, $ev) = send_raw(encode(obj(object => 'whatsapp_business_account',
        entry => [ obj(id => WABA_ID, changes => [ obj(field => 'messages',
            value => obj(messaging_product => 'whatsapp',
                metadata => obj(phone_number_id => PNID),
                messages => [], statuses => [])) ]) ])));
    is $r->status, 200, 'empty messages and statuses: 200';
    is $inbox->count, 0, 'empty messages and statuses: nothing handed';

    dead_lettered('entry as an object', encode(obj(
        object => 'whatsapp_business_account',
        entry => obj(id => WABA_ID, changes => []))));
}
{
    # unknown members everywhere are ignored
    my $m = msg_text(from => new_contact(), body => 'unknown members',
                     extra => [ future_member => obj(x => [1, 2]) ]);
    my $body = encode(obj(object => 'whatsapp_business_account',
        new_top => true(),
        entry => [ obj(id => WABA_ID, time => num(time), shiny => 'yes',
            changes => [ obj(field => 'messages', extra => num(1),
                value => obj(messaging_product => 'whatsapp',
                    metadata => obj(display_phone_number => DISPLAY,
                                    phone_number_id => PNID, more => 'x'),
                    contacts => [ obj(profile => obj(name => 'U'),
                                      wa_id => $m->get('from')) ],
                    messages => [$m], surprise => [])) ]) ]));
    my ($r, $ev) = send_raw($body);
    is $r->header('x-mw-result'), 'new', 'unknown members: handed off';
    is $ev->[0]{content}{body}, 'unknown members', 'unknown members: content';
    ok !exists $ev->[0]{future_member}, 'unknown members: not copied';
}
{
    # a change of another field is handed on as such
    my $value = obj(event => 'VERIFIED_ACCOUNT', decision => 'APPROVED');
    my ($r, $ev) = send_raw(encode(obj(object => 'whatsapp_business_account',
        entry => [ obj(id => WABA_ID, time => num(time - 5), changes => [
            obj(field => 'account_update', value => $value) ]) ])));
    is $r->header('x-mw-result'), 'new', 'account_update change: handed off';
    is $ev->[0]{kind}, 'change', 'account_update: kind change';
    is $ev->[0]{field}, 'account_update', 'account_update: field';
    is_deeply $ev->[0]{value}, MWTest::Meta::plain($value),
        'account_update: value as sent';
}
{
    my ($r, $ev) = send_raw(wrap('42', '"x"', 'null'));
    is $r->status, 200, 'messages that are not objects: 200';
    is scalar @$ev, 3, 'messages that are not objects: one event each';
    is_deeply [ map { $_->{kind} } @$ev ], [qw(change change change)],
        'messages that are not objects: change events';
}
{
    my ($id, $m) = raw_msg(rest => '"type":5,"text":{"body":"x"}');
    my ($r, $ev) = send_raw(wrap($m));
    is $ev->[0]{class}, 'unsupported', 'type not a string: unsupported';
    is $ev->[0]{reason}, 'unsupported_type', 'type not a string: reason';

    ($id, $m) = raw_msg(rest => '"type":"text","text":"4111 1111 1111 1111"');
    ($r, $ev) = send_raw(wrap($m));
    is $ev->[0]{class}, 'unsupported', 'text as a string: unsupported';
    ok !exists $ev->[0]{content}, 'text as a string: no content';
    ok index(join('', map { $_->{body} } $inbox->raw_requests),
             '4111 1111 1111 1111') < 0,
        'text as a string: its content is not handed on';

    ($id, $m) = raw_msg(rest => '"type":"image","image":["a","b"]');
    ($r, $ev) = send_raw(wrap($m));
    is $ev->[0]{class}, 'unsupported', 'image as an array: unsupported';
}
{
    # no id: still handed, and a retry of it is a duplicate
    my $body = wrap('{"from":"' . new_contact() . '","timestamp":"'
        . (time - 9) . '","type":"text","text":{"body":"no id"}}');
    my ($r, $ev) = send_raw($body);
    is $r->header('x-mw-result'), 'new', 'message without id: handed off';
    is $ev->[0]{id}, '', 'message without id: id ""';
    like $ev->[0]{event_id}, qr/^[0-9a-f]{32}$/, 'message without id: event_id';
    ($r, $ev) = send_raw($body);
    is $r->header('x-mw-result'), 'duplicate',
        'message without id: the retry is a duplicate';
}
{
    my ($id, $m) = raw_msg(from => 'null');
    my ($r, $ev) = send_raw(wrap($m));
    is $r->header('x-mw-result'), 'new', 'from null: handed off';
    is $ev->[0]{from}, '', 'from null: ""';
}

# --- CR/LF where a log line or a header could be split

{
    my $name = "Eve\r\nX-Injected: 1\r\n\r\n<script>";
    my $from = new_contact();
    my $m = msg_text(from => $from, name => $name, body => "line1\r\nline2");
    my $body = delivery(messages => [$m]);
    my ($r, $ev, $req) = send_raw($body);
    is $r->status, 200, 'CRLF in the profile name: 200';
    is $ev->[0]{profile_name}, $name, 'CRLF: the name is kept, as data';
    unlike $req->[0]{body}, qr/[\r\n]/, 'CRLF: no raw CR or LF in the events';

    my $mark = -s ($ng->dir . '/logs/events.log') || 0;
    $r = $ng->deliver(delivery(messages => [
        msg_text(from => $from, name => $name, body => "a\nb") ]),
        path => '/local');
    is $r->status, 200, 'CRLF to /local: 200';
    my $log = wait_until(sub {
        my $l = substr(slurp($ng->dir . '/logs/events.log') // '', $mark);
        $l =~ /\n\z/ ? $l : undef }, 5) // '';
    my @lines = split /\n/, $log, -1;
    pop @lines;     # after the final newline
    is scalar @lines, 1, 'CRLF: one events log line for one delivery';
    unlike $log, qr/\r/, 'CRLF: no raw CR in the events log';
    my $j = json_decode($lines[0] // '');
    is $j && $j->{events}[0]{profile_name}, $name,
        'CRLF: the logged line is JSON holding the name';

    unlike $ng->error_log, qr/^X-Injected/m, 'CRLF: no injected error log line';
    unlike $ng->access_log, qr/^X-Injected/m, 'CRLF: no injected access log line';
}
{
    my $from = "1650\r\n5551234";
    my ($id, $m) = raw_msg(from => '"1650\r\n5551234"');
    my ($r, $ev, $req) = send_raw(wrap($m));
    is $r->status, 200, 'CRLF in from: 200';
    unlike $req->[0]{body} // '', qr/[\r\n]/, 'CRLF in from: escaped';
}

# --- clients that go away

{
    my $body = delivery(messages => [ msg_text(from => new_contact(),
                                               body => 'x' x 200000) ]);
    my $sig = sig_header($body);
    for my $cut (0, 100, 150000) {
        my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
            PeerPort => $ng->port, Proto => 'tcp') or die $!;
        print {$s} "POST /webhook HTTP/1.1\r\nHost: x\r\n"
            . "Content-Type: application/json\r\n"
            . "X-Hub-Signature-256: $sig\r\n"
            . 'Content-Length: ' . length($body) . "\r\n\r\n"
            . substr($body, 0, $cut);
        close $s;
    }
    alive('clients gone mid-body');
    my $r = $ng->deliver($body);
    is $r->status, 200, 'the same delivery sent whole afterwards: 200';
    is $r->header('x-mw-result'), 'new',
        'a delivery cut short never claimed its updates';

    # a client gone while the inbox is slow: the hand-off ends one way
    # or the other, and a retry is never handed twice after a 2xx
    my $m = msg_text(from => new_contact(), body => 'client gone');
    my $d = delivery(messages => [$m]);
    $inbox->set(delay => 1);
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
        PeerPort => $ng->port, Proto => 'tcp') or die $!;
    print {$s} "POST /webhook HTTP/1.1\r\nHost: x\r\n"
        . 'X-Hub-Signature-256: ' . sig_header($d) . "\r\n"
        . 'Content-Length: ' . length($d) . "\r\n\r\n$d";
    ok wait_until(sub { $inbox->count >= 1 }, 5), 'client gone: hand-off began';
    close $s;
    $inbox->set(delay => 0);
    my $res = wait_until(sub {
        my $x = $ng->deliver($d);
        $x->status == 503 ? undef : $x }, 10, 0.2);
    is $res && $res->status, 200, 'client gone: the retry gets 200';
    my $n = grep { ($_->{id} // '') eq $m->get('id') } $inbox->events;
    cmp_ok $n, '<=', 2, 'client gone: at most the aborted try and one retry';
    $res = $ng->deliver($d);
    is $res->header('x-mw-result'), 'duplicate', 'client gone: then duplicate';
    alive('client gone during the hand-off');
}

# --- the challenge

{
    for my $c ('<img src=x onerror=alert(1)>', 'Z' x 10240) {
        my $r = $ng->handshake('hub.mode' => 'subscribe',
            'hub.verify_token' => $TOKEN, 'hub.challenge' => $c);
        is $r->status, 400, 'hostile challenge (' . length($c) . ' bytes): 400';
        ok index($r->raw, substr($c, 0, 30)) < 0,
            'hostile challenge: not reflected';
    }
}

alive('the end');
unlike $ng->error_log, qr/\[(?:alert|emerg|crit)\]|exited on signal/,
    'no crash or alert in the error log';

done_testing;
