#!/usr/bin/perl
# The send path (meta_webhook_send): forwarding to the Graph API (exact
# bytes, the configured token, the path), Meta's answers passed back,
# every validation refusal, the 24-hour window (opened by the webhook,
# closed by time or by Meta's failed 131047 status), the session query.

use strict;
use warnings;
use Test::More;
use lib 't/lib';
use MWTest;
use MWTest::Meta;
use MWTest::Send;
use POSIX ();

plan skip_all => "no module at $MODULE (run make)" unless -f $MODULE;

my $UNLISTED = '106540352242999';
my $s = send_setup(accounts => join(' ', WABA_ID, PNID, PNID2),
                   body_size => '64k');
my ($ng, $g) = @{$s}{qw(ng graph)};
my $NOW = time;

# Sends $body; returns (response, [requests the fake received for it]).
sub sent {
    my ($body, %o) = @_;
    $g->clear;
    my $r = graph_send($s, $o{pnid} // PNID, $body, %o);
    return ($r, [ $g->requests ]);
}

# --- forwarding: exact bytes, the configured token, the path

my $c1 = new_contact();
is open_window($s, $c1)->status, 200, 'an inbound message from c1';
{
    # odd but valid JSON: spacing, key order, escapes, raw UTF-8 bytes
    my $body = qq({ "to" : "$c1",\n  "messaging_product":"whatsapp",)
             . qq( "type":"text",\t"text":{"preview_url":false,)
             . qq("body":"caf\\u00e9 \xe2\x9c\x93 \\/ <b>&amp;</b> \\"q\\" %s"} }\n);
    my ($r, $req) = sent($body, headers => [
        Authorization => 'Bearer client-supplied-token-0001',
        'X-Evil' => 'injected', Cookie => 'session=abc']);
    is $r->status, 200, 'forward: 200 passed back' or diag $r->summary;
    like $r->header('content-type') // '', qr{^application/json\b},
        'forward: Content-Type application/json';
    is scalar @$req, 1, 'forward: the fake Graph API got one request';
    my $q = $req->[0] // {};
    is $q->{method}, 'POST', 'forward: POST';
    is $q->{path}, '/v23.0/' . PNID . '/messages',
        'forward: {graph_url}/{phone_number_id}/messages';
    ok $q->{body} eq $body, 'forward: the body is the exact bytes sent'
        or diag "sent: $body\ngot:  " . ($q->{body} // '');
    my @auth = grep { lc $_->[0] eq 'authorization' } @{ $q->{header_lines} };
    is scalar @auth, 1, 'forward: one Authorization header';
    is $auth[0] && $auth[0][1], "Bearer $ACCESS_TOKEN",
        'forward: Bearer + the token of the file (no newline)';
    like $q->{headers}{'content-type'} // '', qr{^application/json\b},
        'forward: Content-Type application/json';
    ok !exists $q->{headers}{'x-evil'} && !exists $q->{headers}{cookie},
        "forward: the client's other headers are not passed on";
    my $head = join "\n", map { "$_->[0]: $_->[1]" } @{ $q->{header_lines} };
    unlike $head, qr/client-supplied-token/,
        "forward: the client's own Authorization is not passed on";
    ok $r->body eq ($q->{answer} // ''),
        "forward: Meta's answer passed back byte for byte"
        or diag 'got ' . $r->body . "\nfake answered " . ($q->{answer} // '');
    my $j = $r->json // {};
    like $j->{messages}[0]{id} // '', qr/^wamid\.HBgLFAKE/,
        "forward: Meta's message id is in the answer";
}
{
    my $body = text_req($c1, 'with the version segment');
    my ($r, $req) = sent($body, version => 'v23.0');
    is $r->status, 200, 'POST /graph/v23.0/{id}/messages: 200'
        or diag $r->summary;
    is $req->[0] && $req->[0]{path}, '/v23.0/' . PNID . '/messages',
        'version segment: the same Graph path';
    ok $req->[0] && $req->[0]{body} eq $body, 'version segment: same bytes';

    ($r, $req) = sent(text_req($c1, 'second number'), pnid => PNID2);
    is $r->status, 400, 'a second listed number: the window is per number'
        or diag $r->summary;
    is scalar @$req, 0, 'second number: not sent';
}

# --- Meta's own errors are passed back unchanged

for my $case ([131026, 400], [100, 400], [190, 401], [130429, 429],
              [1, 500], [2, 503])
{
    my ($code, $http) = @$case;
    $g->set(mode => 'error', code => $code, status => $http);
    my ($r, $req) = sent(text_req($c1, "meta says $code"));
    is $r->status, $http, "Meta $http ($code): status passed back"
        or diag $r->summary;
    is scalar @$req, 1, "Meta $http ($code): one call";
    ok $req->[0] && $r->body eq $req->[0]{answer},
        "Meta $http ($code): body passed back unchanged"
        or diag 'got ' . $r->body;
    like $r->header('content-type') // '', qr{^application/json\b},
        "Meta $http ($code): application/json";
}
{
    # an answer that is not even JSON (a proxy in front of Meta) is
    # still Meta's side's answer
    $g->set(mode => 'raw', status => 502, body => '<html>bad gateway</html>');
    my ($r, $req) = sent(text_req($c1, 'html answer'));
    is $r->status, 502, 'an HTML 502 from the Graph side: 502 passed back';
    is scalar @$req, 1, 'HTML 502: one call, not retried';
}
{
    # answers far larger than Meta's: read in many pieces and passed back
    # whole up to 1 MB; past that cut, with a warning
    my $pad = join '', map { chr(97 + $_ % 26) } 1 .. 300_000;
    my $big = qq({"messaging_product":"whatsapp","contacts":[{"input":"$c1",)
            . qq("wa_id":"$c1"}],"messages":[{"id":"wamid.HBgLBIG"}],)
            . qq("padding":"$pad"});
    $g->set(mode => 'raw', status => 200, body => $big,
            content_type => 'application/json');
    my ($r, $req) = sent(text_req($c1, 'a 300 KB answer'));
    is $r->status, 200, 'a 300 KB answer: 200';
    ok $r->body eq $big, 'a 300 KB answer: passed back byte for byte'
        or diag 'got ' . length($r->body) . ' bytes';

    my $mark = $ng->log_mark;
    $big = '{"padding":"' . ('y' x 1_500_000) . '"}';
    $g->set(mode => 'raw', status => 200, body => $big,
            content_type => 'application/json');
    ($r, $req) = sent(text_req($c1, 'a 1.5 MB answer'));
    is $r->status, 200, 'a 1.5 MB answer: 200';
    is length($r->body), 1024 * 1024, 'a 1.5 MB answer: cut to 1 MB';
    ok substr($big, 0, 1024 * 1024) eq $r->body,
        'a 1.5 MB answer: its first megabyte';
    like $ng->wait_error_log(qr/answer was cut to 1048576 bytes/, $mark),
        qr/answer was cut to 1048576 bytes/, 'a 1.5 MB answer: warned';
}
$g->set(mode => 'ok');

# --- validation: every refusal, its status and code, nothing sent

my $long = 'x' x 4097;
my $e4096 = "\xc3\xa9" x 4096;          # 4096 characters, 8192 bytes
my $e4097 = "\xc3\xa9" x 4097;
my @INVALID = (
    ['not JSON', 'hello', 100],
    ['empty body', '', 100],
    ['truncated JSON', qq({"messaging_product":"whatsapp","to":"$c1"), 100],
    ['data after the document', text_req($c1) . '{}', 100],
    ['not an object', '["whatsapp"]', 100],
    ['duplicate key', qq({"messaging_product":"whatsapp","to":"$c1",)
        . qq("to":"447700900123","type":"text","text":{"body":"hi"}}), 100],
    ['duplicate key, nested', qq({"messaging_product":"whatsapp",)
        . qq("to":"$c1","type":"text","text":{"body":"a","body":"b"}}), 100],
    ['invalid UTF-8', qq({"messaging_product":"whatsapp","to":"$c1",)
        . qq("type":"text","text":{"body":"\xff\xfe"}}), 100],
    ['no to', '{"messaging_product":"whatsapp","type":"text",'
        . '"text":{"body":"hi"}}', 131008],
    ['to not a string', '{"messaging_product":"whatsapp","to":16505551234,'
        . '"type":"text","text":{"body":"hi"}}', 131009],
    ['to empty', '{"messaging_product":"whatsapp","to":"",'
        . '"type":"text","text":{"body":"hi"}}', 131009],
    ['messaging_product not whatsapp', qq({"messaging_product":"sms",)
        . qq("to":"$c1","type":"text","text":{"body":"hi"}}), 131009],
    ['type missing (no text object)', qq({"messaging_product":"whatsapp",)
        . qq("to":"$c1","image":{"link":"https://example.com/a.jpg"}}),
        131008],
    ['unknown type', qq({"messaging_product":"whatsapp","to":"$c1",)
        . qq("type":"hologram","hologram":{"shape":"cube"}}), 131009],
    ['type Text (wrong case)', qq({"messaging_product":"whatsapp",)
        . qq("to":"$c1","type":"Text","Text":{"body":"hi"}}), 131009],
    ['type object missing (text)', qq({"messaging_product":"whatsapp",)
        . qq("to":"$c1","type":"text"}), 131008],
    ['type object missing (image)', qq({"messaging_product":"whatsapp",)
        . qq("to":"$c1","type":"image","text":{"body":"hi"}}), 131008],
    ['type object missing (template)', qq({"messaging_product":"whatsapp",)
        . qq("to":"$c1","type":"template"}), 131008],
    ['type object not an object', qq({"messaging_product":"whatsapp",)
        . qq("to":"$c1","type":"text","text":"hi"}), 131009],
    ['text.body missing', qq({"messaging_product":"whatsapp","to":"$c1",)
        . qq("type":"text","text":{"preview_url":true}}), 131008],
    ['text.body over 4096 characters', text_req($c1, $long), 131009],
    ['text.body over 4096 characters (multibyte)',
        qq({"messaging_product":"whatsapp","to":"$c1","type":"text",)
        . qq("text":{"body":"$e4097"}}), 131009],
    ['template.name missing', qq({"messaging_product":"whatsapp",)
        . qq("to":"$c1","type":"template","template":)
        . qq({"language":{"code":"en_US"}}}), 131008],
);
{
    my $before = $g->count;
    for my $case (@INVALID) {
        my ($name, $body, $code) = @$case;
        my $r = graph_send($s, PNID, $body);
        graph_error_is($r, 400, $code, "invalid: $name");
    }
    # too large for client_max_body_size (64k): nginx's 413
    my $r = graph_send($s, PNID, text_req($c1, 'y' x (100 * 1024)));
    is $r->status, 413, 'a body over client_max_body_size: 413';
    is $g->count, $before, 'nothing invalid reached the Graph API';
}
{
    # the limits are characters, not bytes; 4096 is allowed
    my ($r, $req) = sent(text_req($c1, 'z' x 4096));
    is $r->status, 200, 'text.body of exactly 4096 characters: sent'
        or diag $r->summary;
    ($r, $req) = sent(qq({"messaging_product":"whatsapp","to":"$c1",)
        . qq("type":"text","text":{"body":"$e4096"}}));
    is $r->status, 200, '4096 two-byte characters (8192 bytes): sent'
        or diag $r->summary;
    is scalar @$req, 1, '4096 characters: one call';
    # Meta's own shortcut: no "type" but a text object is a text message
    ($r, $req) = sent(qq({"messaging_product":"whatsapp","to":"$c1",)
        . qq("text":{"body":"no type member"}}));
    is $r->status, 200, 'no type, with a text object: sent as text'
        or diag $r->summary;
}

# --- methods, paths, numbers

{
    my $before = $g->count;
    my @not_graph;
    for my $m (qw(GET PUT DELETE PATCH)) {
        my $r = graph_send($s, PNID, $m eq 'GET' ? undef : text_req($c1),
                           method => $m);
        is $r->status, 405, "$m {id}/messages: 405";
        my $j = $r->json;
        push @not_graph, "$m: " . ($r->header('content-type') // '-') . ' '
            . substr($r->body, 0, 60)
            unless ref $j eq 'HASH' && ref $j->{error} eq 'HASH'
                && ($j->{error}{code} // '') =~ /^\d+$/
                && ($r->header('content-type') // '') =~ m{^application/json};
    }
    ok !@not_graph, 'the 405 answers are Graph-style JSON errors'
        or diag join "\n", @not_graph;
    my $r = graph_send($s, $UNLISTED, text_req($c1, 'to an unlisted number'));
    graph_error_is($r, 403, undef, 'a phone_number_id not listed');
    $r = graph_send($s, $UNLISTED, template_req($c1));
    is $r->status, 403, 'unlisted number: a template too is refused';
    my ($j, $sr) = session_of($s, $c1, pnid => $UNLISTED);
    is $sr->status, 403, 'unlisted number: its session query is refused';
    is $g->count, $before, 'refused methods and numbers reached nothing';
}

# --- the window

my $T_OLD = $NOW - 25 * 3600;           # a message 25 h ago
{
    my $c = new_contact();
    my ($r, $req) = sent(text_req($c, 'unsolicited'));
    my $e = graph_error_is($r, 400, 131047, 'never wrote: text');
    is scalar @$req, 0, 'never wrote: not sent';
    like $e->{message} // '', qr/24|window|re-engagement/i,
        'never wrote: the message names the window';

    my $old = new_contact();
    is open_window($s, $old, ts => $T_OLD)->status, 200,
        'a message 25 h old is delivered';
    ($r, $req) = sent(text_req($old, 'too late'));
    $e = graph_error_is($r, 400, 131047, 'window closed 1 h ago: text');
    is scalar @$req, 0, 'window closed: Meta not called';
    my $closed = $T_OLD + 86400;
    my $iso = POSIX::strftime('%Y-%m-%dT%H:%M', gmtime $closed);
    my $details = ref $e->{error_data} eq 'HASH'
                ? $e->{error_data}{details} // '' : '';
    ok index($details, $closed) >= 0 || index($details, $iso) >= 0,
        "window closed: details say when it closed ($closed / $iso)"
        or diag "details: $details";

    ($r, $req) = sent(image_req($old));
    graph_error_is($r, 400, 131047, 'window closed: an image');
    ($r, $req) = sent(qq({"messaging_product":"whatsapp","to":"$old",)
        . q("type":"interactive","interactive":{"type":"button",)
        . q("body":{"text":"Pick"},"action":{"buttons":[{"type":"reply",)
        . q("reply":{"id":"a","title":"A"}}]}}}));
    graph_error_is($r, 400, 131047, 'window closed: interactive');

    my $body = template_req($old, 'order_update');
    ($r, $req) = sent($body);
    is $r->status, 200, 'window closed: a template is sent'
        or diag $r->summary;
    ok $req->[0] && $req->[0]{body} eq $body, 'template: exact bytes';

    # the reply to the template opens a new window
    is open_window($s, $old, ts => $NOW - 30)->status, 200,
        'the contact answers the template';
    ($r, $req) = sent(text_req($old, 'welcome back'));
    is $r->status, 200, 'after the answer: free-form text is sent'
        or diag $r->summary;
}
{
    # measured from the message's own timestamp: 2 minutes either side
    my $in = new_contact();
    my $out = new_contact();
    open_window($s, $in, ts => $NOW - 86400 + 120);
    open_window($s, $out, ts => $NOW - 86400 - 120);
    my ($r) = sent(text_req($in, 'just in time'));
    is $r->status, 200, 'message 23:58 ago: window open' or diag $r->summary;
    ($r) = sent(text_req($out, 'just too late'));
    is $r->status, 400, 'message 24:02 ago: window closed';
    is(($r->json // {})->{error}{code}, 131047, '24:02: code 131047');

    # an older message arriving late does not move the window back
    open_window($s, $in, ts => $NOW - 5 * 86400);
    ($r) = sent(text_req($in, 'still open'));
    is $r->status, 200, 'a late older message: window still open'
        or diag $r->summary;
}

# --- the recipient in any usual writing is one contact

{
    my $c = new_contact();
    open_window($s, $c);
    for my $to (pretty_contact($c),
                sprintf('+%s (%s) %s-%s', substr($c, 0, 1), substr($c, 1, 3),
                        substr($c, 4, 3), substr($c, 7)),
                "+$c")
    {
        my $body = text_req($to, 'formatted recipient');
        my ($r, $req) = sent($body);
        is $r->status, 200, "to \"$to\" finds the window of $c"
            or diag $r->summary;
        ok $req->[0] && $req->[0]{body} eq $body,
            "to \"$to\": forwarded unchanged";
    }
    my $j = session_of($s, pretty_contact($c));
    is $j && $j->{contact}, $c, 'session query with "+1 650 ..." (encoded): '
        . 'the normalized contact';
    ok $j && $j->{open}, 'session query with the pretty number: open';

    my $other = new_contact();
    my ($r, $req) = sent(text_req(pretty_contact($other), 'nobody'));
    is $r->status, 400, 'a formatted number without a window: refused';
}

# --- Meta is the authority: a failed 131047 status closes the window

{
    my $c = new_contact();
    open_window($s, $c, ts => $NOW - 3600);
    my ($r) = sent(text_req($c, 'first reply'));
    is $r->status, 200, '131047 case: the window is open at first';
    my $wamid = ($r->json // {})->{messages}[0]{id};

    # another error code does not close it
    is deliver_status($s, $c, errors => [131026])->status, 200,
        'a failed 131026 status is delivered';
    ($r) = sent(text_req($c, 'after 131026'));
    is $r->status, 200, 'failed 131026: the window stays open'
        or diag $r->summary;

    my $S = time;                       # Meta's refusal follows the send
    is deliver_status($s, $c, errors => [131047], ts => $S,
                      $wamid ? (id => $wamid) : ())->status, 200,
        'a failed 131047 status is delivered';
    my $j = session_of($s, $c);
    ok $j && !$j->{open}, 'failed 131047: the session query says closed'
        or diag explain $j;
    my $req;
    ($r, $req) = sent(text_req($c, 'after 131047'));
    graph_error_is($r, 400, 131047, 'failed 131047: text refused');
    is scalar @$req, 0, 'failed 131047: Meta not called';
    ($r) = sent(template_req($c));
    is $r->status, 200, 'failed 131047: a template still goes'
        or diag $r->summary;

    # a message from before the refusal, delivered late (a retry of
    # Meta's): Meta had it when it refused, so the window stays closed
    is open_window($s, $c, ts => $S - 30, body => 'late')->status, 200,
        'a message older than the 131047, delivered late';
    ($r, $req) = sent(text_req($c, 'after the late message'));
    graph_error_is($r, 400, 131047,
        'a message older than the 131047 does not reopen the window');
    is scalar @$req, 0, 'after the late message: Meta not called';

    # a 131047 for the same wa_id on another business number leaves this
    # one alone
    my $c2 = new_contact();
    open_window($s, $c2);
    deliver_status($s, $c2, errors => [131047], pnid => PNID2);
    ($r) = sent(text_req($c2, 'other number failed'));
    is $r->status, 200, 'a 131047 on another number: this window stays open'
        or diag $r->summary;

    # the contact writes again: a new window
    open_window($s, $c, ts => $S + 1);
    ($r) = sent(text_req($c, 'reopened'));
    is $r->status, 200, 'after 131047, a new message reopens the window'
        or diag $r->summary;
}

# --- the session query

{
    my $c = new_contact();
    my ($j, $r) = session_of($s, $c);
    is $r->status, 200, 'session query: 200';
    like $r->header('content-type') // '', qr{^application/json\b},
        'session query: application/json';
    is $j && $j->{phone_number_id}, PNID, 'before: phone_number_id';
    is $j && $j->{contact}, $c, 'before: contact';
    ok $j && JSON::PP::is_bool($j->{open}) && !$j->{open},
        'before: open false (a JSON boolean)';
    ok $j && JSON::PP::is_bool($j->{conversation_counted})
        && !$j->{conversation_counted}, 'before: conversation_counted false';
    is $j && $j->{optin}, 'none', 'before: optin none';
    ok $j && exists $j->{expires_at} && exists $j->{session_started_at},
        'before: expires_at and session_started_at present';

    my $ts = $NOW - 1800;
    open_window($s, $c, ts => $ts);
    $j = session_of($s, $c);
    ok $j && $j->{open}, 'after a message: open';
    is $j && $j->{expires_at}, $ts + 86400, 'after a message: expires_at';
    is $j && $j->{session_started_at}, $ts,
        'after a message: session_started_at';
    ok $j && !$j->{conversation_counted}, 'after a message: not counted yet';

    ($r) = sent(text_req($c, 'reply'));
    is $r->status, 200, 'a reply is sent';
    $j = session_of($s, $c);
    ok $j && $j->{conversation_counted}, 'after a reply: conversation_counted';
    is $j && $j->{expires_at}, $ts + 86400, 'a reply does not move the window';

    open_window($s, $c, ts => $ts + 600);
    $j = session_of($s, $c);
    is $j && $j->{expires_at}, $ts + 600 + 86400,
        'a second message moves expires_at';
    is $j && $j->{session_started_at}, $ts, 'same session: start unchanged';
    ok $j && $j->{conversation_counted}, 'same session: still counted';

    $j = session_of($s, $c, pnid => PNID2);
    ok $j && !$j->{open}, 'the same contact on another number: no window';

    $r = $ng->get("/graph/v23.0/" . PNID . "/sessions/$c");
    is $r->status, 200, 'session query with the version segment: 200';
    is(($r->json // {})->{expires_at}, $ts + 600 + 86400,
        'version segment: same answer');
}

no_crash($ng, 'no crash or alert in the error log');

done_testing;
