#!/usr/bin/perl
# Normalized events: every message type and status, exact fields;
# classification (supported / unsupported / quarantined); content only
# when supported; quarantined text nowhere; opt-in keywords; windows.

use strict;
use warnings;
use utf8;
use Test::More;
use lib 't/lib';
use MWTest;
use MWTest::Meta;

plan skip_all => "no module at $MODULE (run make)" unless -f $MODULE;

my $RULES = <<'EOF';
# operator rules: NAME  PCRE
phishing   (?i)verify\s+your\s+account
otp_code   \bOTP\s*[:=]\s*\d{6}\b

   # an indented comment, then a rule with non-ASCII text
password   contraseña\s+es
EOF
utf8::encode($RULES);

my ($ng, $inbox) = setup(
    files => { rules => [$RULES, 0644] },
    extra => 'meta_webhook_quarantine_rules %DIR%/conf/rules;',
    server_conf =>
        webhook_location(path => '/cardonly', inbox => '%INBOX%',
            secret => '%SECRET_FILE%',
            extra => 'meta_webhook_quarantine_detectors card;')
      . webhook_location(path => '/nodetect', inbox => '%INBOX%',
            secret => '%SECRET_FILE%',
            extra => 'meta_webhook_quarantine_detectors off;'),
);

my $NOW = time;
my %ALLOWED = map { $_ => 1 } qw(kind channel id phone_number_id
    display_phone_number waba_id timestamp event_id from profile_name type
    class reason content context window optin removed related_id errors
    subtype status recipient conversation pricing biz_opaque_callback_data);

# Delivers $body to $path; returns (response, [events handed off]).
sub send_events {
    my ($body, $path) = @_;
    $inbox->clear;
    my $r = $ng->deliver($body, path => $path // '/webhook');
    my @req = $inbox->requests;
    my @ev = @req == 1 && ref $req[0] eq 'HASH' ? @{ $req[0]{events} } : ();
    return ($r, \@ev, \@req);
}

# the event expected for message obj $m: %o has class, reason, content
# (an obj or plain value), window (expires), and extra members
sub expect_msg {
    my ($m, %o) = @_;
    my $ts = $m->get('timestamp');
    my %e = (
        kind => 'message', channel => 'whatsapp',
        id => $m->get('id'),
        phone_number_id => $o{pnid} // PNID,
        display_phone_number => DISPLAY,
        waba_id => WABA_ID,
        timestamp => 0 + $ts,
        from => $o{from} // $m->get('from'),
        type => $m->get('type'),
        class => $o{class} // 'supported',
        window => { expires_at => $o{expires} // $ts + 86400 },
    );
    $e{profile_name} = $m->get('_name') if defined $m->get('_name');
    if ($e{class} eq 'supported') {
        $e{content} = exists $o{content} ? MWTest::Meta::plain($o{content})
                    : MWTest::Meta::plain($m->get($e{type}));
    } else {
        $e{reason} = $o{reason};
    }
    my $ctx = $m->get('context');
    $e{context} = MWTest::Meta::plain($ctx) if $ctx;
    my $err = $m->get('errors');
    $e{errors} = MWTest::Meta::plain($err) if $err;
    %e = (%e, %{ $o{more} // {} });
    return \%e;
}

# compares one event: event_id is 32 hex digits, no member outside the
# documented ones, then everything else exactly
sub check_event {
    my ($got, $want, $name) = @_;
    if (ref $got ne 'HASH') {
        fail "$name: an event";
        return;
    }
    my %g = %$got;
    like delete $g{event_id} // '', qr/^[0-9a-f]{32}$/, "$name: event_id";
    my @extra = grep { !$ALLOWED{$_} } sort keys %g;
    is "@extra", '', "$name: no undocumented member";
    is_deeply \%g, $want, "$name: exact event"
        or diag explain { got => \%g, want => $want };
}

sub one_message {
    my ($name, $m, %o) = @_;
    my ($r, $ev) = send_events(delivery(messages => [$m]), $o{path});
    is $r->status, 200, "$name: 200" or diag $r->summary;
    is scalar @$ev, 1, "$name: one event handed off";
    check_event($ev->[0], expect_msg($m, %o), $name);
    return $ev->[0];
}

my $k = 0;
sub ts { $NOW - 1000 + $k++ }   # distinct, increasing, in the past

# --- supported types

one_message('text', msg_text(from => new_contact(), ts => ts(),
    body => "Hello \x{1f44b} <b>bold</b> 50% off / caf\x{e9}"));

one_message('text with a context (reply)', msg_text(from => new_contact(),
    ts => ts(), body => 'Is it in stock?',
    context => obj(from => DISPLAY, id => wamid(),
        referred_product => obj(catalog_id => '1456709998111244',
                                product_retailer_id => 'SKU-1'))));

one_message('text, forwarded', msg_text(from => new_contact(), ts => ts(),
    context => obj(forwarded => true()), body => 'fwd'));

one_message('text, profile name in Unicode',
    msg_text(from => new_contact(), ts => ts(),
             name => "Jos\x{e9} \x{d1}\x{fa}\x{f1}ez \x{1f642}",
             body => 'hola'));

for my $mime ('image/jpeg', 'image/png') {
    one_message("image $mime", msg_image(from => new_contact(), ts => ts(),
        mime_type => $mime, caption => 'Look at this / <3'));
}
for my $mime ('video/mp4', 'video/3gpp') {
    one_message("video $mime", msg_video(from => new_contact(), ts => ts(),
        mime_type => $mime, caption => 'a GIF arrives as mp4'));
}
one_message('audio, voice note (ogg opus)', msg_audio(from => new_contact(),
    ts => ts(), voice => 1));
for my $mime ('audio/aac', 'audio/amr', 'audio/mpeg', 'audio/mp4') {
    one_message("audio $mime", msg_audio(from => new_contact(), ts => ts(),
        mime_type => $mime, voice => 0));
}
for my $mime ('application/pdf', 'text/plain', 'audio/mpeg',
    'application/vnd.openxmlformats-officedocument.wordprocessingml.document')
{
    one_message("document $mime", msg_document(from => new_contact(),
        ts => ts(), mime_type => $mime, caption => 'the file'));
}
one_message('sticker webp', msg_sticker(from => new_contact(), ts => ts()));
one_message('location', msg_location(from => new_contact(), ts => ts()));
{
    my $m = msg_contacts(from => new_contact(), ts => ts());
    one_message('contacts (shared contact)', $m,
                content => $m->get('contacts'));
}
for my $kind (qw(button_reply list_reply nfm_reply)) {
    one_message("interactive $kind", msg_interactive(from => new_contact(),
        ts => ts(), kind => $kind));
}
one_message('button (template quick reply)', msg_button(from => new_contact(),
    ts => ts()));
one_message('order', msg_order(from => new_contact(), ts => ts()));
one_message('system', msg_system(from => new_contact(), ts => ts()));
one_message('request_welcome', msg_request_welcome(from => new_contact(),
    ts => ts()), content => {});
{
    my $orig = wamid();
    one_message('edit', msg_edit(from => new_contact(), ts => ts(),
        original => $orig, body => 'fixed typo'),
        more => { related_id => $orig });
}

# --- unsupported: a placeholder without content

{
    my $target = wamid();
    my $ev = one_message('reaction', msg_reaction(from => new_contact(),
        ts => ts(), to => $target), class => 'unsupported',
        reason => 'reaction', more => { related_id => $target });
    ok !exists $ev->{content}, 'reaction: no content';

    $ev = one_message('reaction removed', msg_reaction(from => new_contact(),
        ts => ts(), to => $target, emoji => undef), class => 'unsupported',
        reason => 'reaction',
        more => { related_id => $target, removed => JSON::PP::true() });
    ok !exists $ev->{content}, 'removed reaction: no content';
}
{
    my $orig = wamid();
    one_message('revoke (deleted)', msg_revoke(from => new_contact(),
        ts => ts(), original => $orig), class => 'unsupported',
        reason => 'deleted', more => { related_id => $orig });
}
one_message('unsupported poll_creation', msg_unsupported(from => new_contact(),
    ts => ts()), class => 'unsupported', reason => 'unsupported_type',
    more => { subtype => 'poll_creation' });
one_message('unknown', msg_unknown(from => new_contact(), ts => ts()),
    class => 'unsupported', reason => 'unsupported_type');
one_message('a type nobody knows yet', msg_generic(from => new_contact(),
    ts => ts(), type => 'hologram', object => obj(shape => 'cube')),
    class => 'unsupported', reason => 'unsupported_type');

for my $case (['image', 'image/gif'], ['image', 'image/webp'],
              ['video', 'video/quicktime'], ['audio', 'audio/wav'],
              ['sticker', 'image/png'],
              ['document', 'application/x-msdownload'],
              ['document', 'application/zip'],
              ['image', undef])
{
    my ($type, $mime) = @$case;
    my $b = { image => \&msg_image, video => \&msg_video,
              audio => \&msg_audio, sticker => \&msg_sticker,
              document => \&msg_document }->{$type};
    my $m = $b->(from => new_contact(), ts => ts(),
                 defined $mime ? (mime_type => $mime) : (mime_type => ''),
                 caption => 'secret plans');
    my $ev = one_message("$type " . ($mime // 'without mime type'), $m,
        class => 'unsupported', reason => 'unsupported_attachment');
    ok !exists $ev->{content}, "$type " . ($mime // 'no mime') . ': no content';
}

# --- statuses

sub expect_status {
    my ($s) = @_;
    my %e = (
        kind => 'status', channel => 'whatsapp',
        id => $s->get('id'), status => $s->get('status'),
        phone_number_id => PNID, display_phone_number => DISPLAY,
        waba_id => WABA_ID,
        timestamp => 0 + $s->get('timestamp'),
        recipient => $s->get('recipient_id'),
    );
    for my $k (qw(conversation pricing errors)) {
        my $v = $s->get($k);
        $e{$k} = MWTest::Meta::plain($v) if $v;
    }
    return \%e;
}

for my $case ([sent => {conversation => 1}], [delivered => {}], [read => {}],
              [failed => {errors => [131047]}],
              [failed => {errors => [131026]}])
{
    my ($st, $o) = @$case;
    my $s = status_update(status => $st, recipient => new_contact(),
                          ts => ts(), %$o);
    my ($r, $ev) = send_events(delivery(statuses => [$s]));
    my $name = "status $st" . ($o->{errors} ? " $o->{errors}[0]" : '');
    is $r->status, 200, "$name: 200";
    is scalar @$ev, 1, "$name: one event";
    check_event($ev->[0], expect_status($s), $name);
    ok !exists $ev->[0]{window}, "$name: no window on a status";
    ok !exists $ev->[0]{class}, "$name: no class on a status";
    if ($o->{errors}) {
        is $ev->[0]{errors}[0]{code}, $o->{errors}[0],
            "$name: the error code is handed on";
    }
}

# legacy: statuses[].status "deleted" is a deleted message
{
    my $who = new_contact();
    my $s = status_deleted(recipient => $who, ts => ts());
    my ($r, $ev) = send_events(delivery(statuses => [$s]));
    is $r->status, 200, 'legacy deleted: 200';
    is scalar @$ev, 1, 'legacy deleted: one event';
    my $e = $ev->[0];
    is $e->{kind}, 'message', 'legacy deleted: a message event';
    is $e->{type}, 'deleted', 'legacy deleted: type deleted';
    is $e->{class}, 'unsupported', 'legacy deleted: unsupported';
    is $e->{reason}, 'deleted', 'legacy deleted: reason deleted';
    is $e->{id}, $s->get('id'), 'legacy deleted: the message id';
    is $e->{from}, $who, 'legacy deleted: from the contact';
    is $e->{timestamp}, 0 + $s->get('timestamp'), 'legacy deleted: timestamp';
    ok !exists $e->{content}, 'legacy deleted: no content';
    ok !exists $e->{status}, 'legacy deleted: no status member';
}

# --- opt-in keywords

for my $case (['YES', 'in'], ['START', 'in'], ['SUBSCRIBE', 'in'],
              ['yes', 'in'], [' Start ', 'in'], ["SUBSCRIBE\n", 'in'],
              ['STOP', 'out'], ['stop', 'out'],
              ['YES please', undef], ['STOP!', undef], ['yess', undef],
              ['Please STOP', undef], ['START.', undef])
{
    my ($text, $want) = @$case;
    (my $label = $text) =~ s/\n/\\n/g;
    my $m = msg_text(from => new_contact(), ts => ts(), body => $text);
    my ($r, $ev) = send_events(delivery(messages => [$m]));
    is $ev->[0]{optin}, $want, "text '$label': optin "
        . ($want // 'absent');
    ok !exists $ev->[0]{optin}, "text '$label': no optin member"
        unless defined $want;
}
{
    # a keyword as a button's text is not a typed text message
    my $m = msg_button(from => new_contact(), ts => ts(), text => 'STOP',
                       payload => 'STOP');
    my ($r, $ev) = send_events(delivery(messages => [$m]));
    ok !exists $ev->[0]{optin} || $ev->[0]{optin} eq 'out',
        'button STOP: at most an opt-out';
}

# --- quarantine

my @SENSITIVE;      # every text that must appear nowhere

sub quarantined {
    my ($name, $m, $reason, %o) = @_;
    my $path = $o{path} // '/webhook';
    my ($r, $ev, $req) = send_events(delivery(messages => [$m]), $path);
    is $r->status, 200, "$name: 200" or diag $r->summary;
    is scalar @$ev, 1, "$name: one event";
    my $e = $ev->[0] // {};
    is $e->{class}, 'quarantined', "$name: class quarantined";
    is $e->{reason}, $reason, "$name: reason $reason";
    ok !exists $e->{content}, "$name: no content";
    is $e->{id}, $m->get('id'), "$name: id kept";
    is $e->{from}, $m->get('from'), "$name: from kept";
    is $e->{type}, $m->get('type'), "$name: type kept";
    is $e->{window}{expires_at}, $m->get('timestamp') + 86400,
        "$name: the message still opens the window";
    my $raw = join '', map { $_->{body} } $inbox->raw_requests;
    for my $s (@{ $o{hidden} }) {
        push @SENSITIVE, $s;
        my $bytes = $s;
        utf8::encode($bytes);       # the inbox got UTF-8 bytes
        (my $shown = $s) =~ s/([^\x20-\x7e])/sprintf '\\x{%x}', ord $1/ge;
        ok index($raw, $bytes) < 0, "$name: '$shown' not handed to the inbox";
        my $esc = encode($s);       # as JSON text, escaped
        ok index($raw, substr($esc, 1, -1)) < 0,
            "$name: not even JSON-escaped";
    }
    return $e;
}

sub supported {
    my ($name, $m, %o) = @_;
    my ($r, $ev) = send_events(delivery(messages => [$m]), $o{path});
    is $ev->[0]{class}, 'supported', "$name: supported"
        or diag explain $ev->[0];
    ok exists $ev->[0]{content}, "$name: content present";
}

quarantined('card number, spaced',
    msg_text(from => new_contact(), ts => ts(),
             body => 'my card is 4111 1111 1111 1111 exp 12/27 cvv 123'),
    'card_number', hidden => ['4111 1111 1111 1111', 'cvv 123']);
quarantined('card number, dashes',
    msg_text(from => new_contact(), ts => ts(),
             body => "pay with 5500-0000-0000-0004 \x{e9}"),
    'card_number', hidden => ['5500-0000-0000-0004']);
quarantined('card number, compact',
    msg_text(from => new_contact(), ts => ts(),
             body => "Number:378282246310005."),
    'card_number', hidden => ['378282246310005']);
quarantined('card number, no-break spaces (pasted; Meta sends \u00a0)',
    msg_text(from => new_contact(), ts => ts(),
             body => "card 4111\x{a0}1111\x{a0}1111\x{a0}1111 thanks"),
    'card_number', hidden => ["4111\x{a0}1111\x{a0}1111\x{a0}1111"]);
quarantined('IBAN, grouped',
    msg_text(from => new_contact(), ts => ts(),
             body => 'Send it to GB82 WEST 1234 5698 7654 32 thanks'),
    'iban', hidden => ['GB82 WEST 1234 5698 7654 32']);
quarantined('IBAN, compact',
    msg_text(from => new_contact(), ts => ts(),
             body => 'IBAN DE89370400440532013000'),
    'iban', hidden => ['DE89370400440532013000']);
quarantined('operator rule',
    msg_text(from => new_contact(), ts => ts(),
             body => 'Please VERIFY your   account at http://evil.example/'),
    'phishing', hidden => ['evil.example', 'VERIFY your']);
quarantined('second operator rule',
    msg_text(from => new_contact(), ts => ts(), body => 'OTP: 918273 ok'),
    'otp_code', hidden => ['918273']);
quarantined('operator rule with non-ASCII text',
    msg_text(from => new_contact(), ts => ts(),
             body => "Mi contrase\x{f1}a es hunter2"),
    'password', hidden => ['hunter2']);
{
    # the detectors read the decoded text: escapes do not hide a number
    my $id = wamid();
    my $from = new_contact();
    my $t = ts();
    my $raw = '{"object":"whatsapp_business_account","entry":[{"id":"'
        . WABA_ID . '","changes":[{"value":{"messaging_product":"whatsapp",'
        . '"metadata":{"display_phone_number":"' . DISPLAY
        . '","phone_number_id":"' . PNID . '"},"messages":[{"from":"'
        . $from . '","id":"' . $id . '","timestamp":"' . $t . '","type":'
        . '"text","text":{"body":"4111\u00201111\u00201111\u00201111"}}]},'
        . '"field":"messages"}]}]}';
    my ($r, $ev, $req) = send_events($raw);
    is $ev->[0]{class}, 'quarantined', 'card written with \u0020 escapes';
    is $ev->[0]{reason}, 'card_number', 'escaped card: reason card_number';
    ok index($req->[0] && json_encode($req->[0]), '4111') < 0,
        'escaped card: not handed to the inbox';
}
quarantined('card number in an image caption',
    msg_image(from => new_contact(), ts => ts(),
              caption => 'card 4012888888881881 front'),
    'card_number', hidden => ['4012888888881881']);
quarantined('card number in a document file name',
    msg_document(from => new_contact(), ts => ts(),
                 filename => 'card-4111111111111111.pdf', caption => 'x'),
    'card_number', hidden => ['4111111111111111']);
quarantined('card number in an interactive reply title',
    msg_generic(from => new_contact(), ts => ts(), type => 'interactive',
        object => obj(type => 'list_reply', list_reply => obj(id => 'r1',
            title => 'Card 4111 1111 1111 1111', description => 'd'))),
    'card_number', hidden => ['4111 1111 1111 1111']);
quarantined('card number in an edit',
    msg_edit(from => new_contact(), ts => ts(),
             body => 'corrected: 4111 1111 1111 1111'),
    'card_number', hidden => ['4111 1111 1111 1111']);
{
    my $e = quarantined('quarantined reply keeps only the context ids',
        msg_text(from => new_contact(), ts => ts(),
            body => '4111 1111 1111 1111',
            context => obj(from => DISPLAY, id => 'wamid.CTX1',
                referred_product => obj(catalog_id => 'CAT9',
                                        product_retailer_id => 'SKU-9'))),
        'card_number', hidden => ['SKU-9']);
    is_deeply $e->{context}, { from => DISPLAY, id => 'wamid.CTX1' },
        'quarantined reply: context holds only from and id';
}
{
    my $e = quarantined('opt-in keyword never read from quarantined text',
        msg_text(from => new_contact(), ts => ts(),
                 body => 'GB82WEST12345698765432'),
        'iban', hidden => ['GB82WEST12345698765432']);
    ok !exists $e->{optin}, 'quarantined: no optin';
}

# detectors chosen per location
quarantined('/cardonly: card still quarantined',
    msg_text(from => new_contact(), ts => ts(),
             body => 'card 4111 1111 1111 1111'),
    'card_number', path => '/cardonly', hidden => ['4111 1111 1111 1111']);
supported('/cardonly: IBAN not a detector there',
    msg_text(from => new_contact(), ts => ts(),
             body => 'IBAN DE89370400440532013000'), path => '/cardonly');
supported('/nodetect: card passes with detectors off',
    msg_text(from => new_contact(), ts => ts(),
             body => 'card 4111 1111 1111 1111'), path => '/nodetect');

# ordinary numbers are not quarantined
for my $text ('Call me at +1 650 555 1234 please',
              'Order 123456789012 arrives Tuesday',
              'Tracking 1Z999AA10123456784',
              '4111 1111 1111 1112 is not a valid card',
              'GB82 WEST 1234 5698 7654 33 is not a valid IBAN',
              'Invoice 2024-0001-7788, total 1234.56 EUR',
              'My number is 16505551234',
              'verify account (no "your")')
{
    supported("ordinary: '$text'", msg_text(from => new_contact(),
        ts => ts(), body => $text));
}
# shared contacts hold phone numbers by nature
supported('shared contact with a long number',
    msg_contacts(from => new_contact(), ts => ts()));

# quarantined text in no log, including the events log of /local
{
    my $m = msg_text(from => new_contact(), ts => ts(),
                     body => 'local card 4111 1111 1111 1111 IBAN DE89370400440532013000');
    push @SENSITIVE, 'DE89370400440532013000';
    my $r = $ng->deliver(delivery(messages => [$m]), path => '/local');
    is $r->status, 200, '/local: quarantined delivery answered 200';
    my $line = wait_until(sub {
        my $l = $ng->access_log($ng->dir . '/logs/events.log');
        $l =~ /\Q${\ $m->get('id')}\E/ ? $l : undef }, 5) // '';
    like $line, qr/"class":"quarantined"/, '/local: logged as quarantined';
    my $logs = $ng->all_logs;
    for my $s (@SENSITIVE) {
        my $bytes = $s;
        utf8::encode($bytes);
        (my $shown = $s) =~ s/([^\x20-\x7e])/sprintf '\\x{%x}', ord $1/ge;
        absent_from($logs, $bytes, "logs: '$shown' appears nowhere");
    }
}

# --- windows: expires_at = the contact's latest message timestamp + 24 h

{
    my $who = new_contact();
    my $t = $NOW - 5000;
    my @m = (msg_text(from => $who, ts => $t, body => 'first'),
             msg_text(from => $who, ts => $t - 3000, body => 'older, later'),
             msg_text(from => $who, ts => $t + 100, body => 'newer'));
    my ($r, $ev) = send_events(delivery(messages => [$m[0]]));
    is $ev->[0]{window}{expires_at}, $t + 86400, 'window: ts + 24 h';
    ($r, $ev) = send_events(delivery(messages => [$m[1]]));
    is $ev->[0]{window}{expires_at}, $t + 86400,
        'window: an older message does not move it back';
    ($r, $ev) = send_events(delivery(messages => [$m[2]]));
    is $ev->[0]{window}{expires_at}, $t + 100 + 86400,
        'window: a newer message moves it forward';

    # in one batch: each event's window is the max so far
    my $who2 = new_contact();
    ($r, $ev) = send_events(delivery(messages => [
        msg_text(from => $who2, ts => $t + 50, body => 'a'),
        msg_text(from => $who2, ts => $t, body => 'b'),
        msg_reaction(from => $who2, ts => $t + 60),
    ]));
    is_deeply [ map { $_->{window}{expires_at} } @$ev ],
        [ $t + 50 + 86400, $t + 50 + 86400, $t + 60 + 86400 ],
        'window: within a batch, forward only, reactions count';

    # a contact written in another form is the same contact
    my $digits = '1415555' . sprintf '%04d', $$ % 10000;
    my $pretty = '+1 415-555-' . substr($digits, -4);
    ($r, $ev) = send_events(delivery(messages => [
        msg_text(from => $pretty, ts => $t + 500, body => 'pretty') ],
        contacts => [['Pat', $digits]]));
    is $ev->[0]{from}, $digits, 'contact "+1 415-555-NNNN" normalized to digits';
    ($r, $ev) = send_events(delivery(messages => [
        msg_text(from => $digits, ts => $t, body => 'digits') ]));
    is $ev->[0]{window}{expires_at}, $t + 500 + 86400,
        'window shared by both forms of the number';

    # per business number: the same contact on another number is apart
    ($r, $ev) = send_events(delivery(pnid => PNID2, messages => [
        msg_text(from => $who, ts => $t - 100, body => 'other number') ]));
    is $ev->[0]{phone_number_id}, PNID2, 'second business number';
    is $ev->[0]{window}{expires_at}, $t - 100 + 86400,
        'window kept per business number';

    # a timestamp in the future cannot hold a window open
    my $future = time + 10 * 86400;
    my $t0 = time;
    ($r, $ev) = send_events(delivery(messages => [
        msg_text(from => new_contact(), ts => $future, body => 'future') ]));
    my $exp = $ev->[0]{window}{expires_at} // 0;
    cmp_ok $exp, '<=', time + 300 + 86400 + 1, 'future timestamp: clamped';
    cmp_ok $exp, '>=', $t0 + 86400, 'future timestamp: window from now on';
    is $ev->[0]{timestamp}, $future, 'future timestamp: reported as sent';
}

# --- contacts known by a business-scoped user id

{
    my $uid = 'US.' . (13491208655302741918 + $$) . $k;
    my $t = $NOW - 4000;
    my $m = msg_text(user_id => $uid, ts => $t, name => 'Scoped User',
                     body => 'hello from a user id');
    my ($r, $ev) = send_events(delivery(messages => [$m]));
    is $r->status, 200, 'user id contact: 200';
    is $ev->[0]{from}, $uid, 'user id contact: from is the user id';
    is $ev->[0]{profile_name}, 'Scoped User',
        'user id contact: profile name from contacts[].user_id';
    is $ev->[0]{window}{expires_at}, $t + 86400, 'user id contact: window';
    ($r, $ev) = send_events(delivery(messages => [
        msg_text(user_id => $uid, ts => $t - 100, body => 'older') ]));
    is $ev->[0]{window}{expires_at}, $t + 86400,
        'user id contact: the window is tracked per user id';

    my $s = status_update(status => 'delivered', recipient_user_id => $uid);
    ($r, $ev) = send_events(delivery(statuses => [$s]));
    is $ev->[0]{recipient}, $uid, 'status to a user id: recipient';
}

# --- a batch: several entries and changes, messages and statuses

{
    my @m1 = (msg_text(from => new_contact(), ts => ts(), body => 'e1c1m1'),
              msg_image(from => new_contact(), ts => ts()));
    my $s1 = status_update(status => 'read', ts => ts());
    my $m2 = msg_reaction(from => new_contact(), ts => ts());
    my $s2 = status_update(status => 'sent', ts => ts());
    my $m3 = msg_text(from => new_contact(), ts => ts(), body => 'e2',
                      name => 'Second Entry');
    my $body = batch(entries => [
        { changes => [ { messages => \@m1, statuses => [$s1] },
                       { pnid => PNID2, messages => [$m2] } ] },
        { waba => '102290129340399',
          changes => [ { statuses => [$s2] }, { messages => [$m3] } ] },
    ]);
    my ($r, $ev) = send_events($body);
    is $r->status, 200, 'batch: 200';
    is_deeply [ map { $_->{id} } @$ev ],
        [ map { $_->get('id') } @m1, $s1, $m2, $s2, $m3 ],
        'batch: every update, in order';
    is_deeply [ map { $_->{kind} } @$ev ],
        [qw(message message status message status message)], 'batch: kinds';
    is $ev->[3]{phone_number_id}, PNID2, 'batch: per-change phone_number_id';
    is $ev->[5]{waba_id}, '102290129340399', 'batch: per-entry waba_id';
    is $ev->[5]{profile_name}, 'Second Entry', 'batch: per-change contacts';
    is $r->header('x-mw-result'), 'new', 'batch: result new';
    my ($req) = $inbox->raw_requests;
    is $req->{headers}{'x-mw-updates'}, 6, '$meta_webhook_updates: 6';
    is $req->{headers}{'x-mw-new'}, 6, '$meta_webhook_new: 6';
    is $req->{headers}{'content-type'}, 'application/json',
        'the inbox gets application/json';
    unlike $req->{body}, qr/\n/, 'the events document is one line';
}

# event ids: unique per update, stable for the same update
{
    my $s = status_update(status => 'delivered', ts => ts());
    my ($r, $ev) = send_events(delivery(statuses => [$s]));
    my $s2 = status_update(id => $s->get('id'), status => 'read', ts => ts());
    my ($r2, $ev2) = send_events(delivery(statuses => [$s2]));
    isnt $ev->[0]{event_id}, $ev2->[0]{event_id},
        'event_id differs for two statuses of one message';
    is $ev->[0]{id}, $ev2->[0]{id}, 'same message id';
}

unlike $ng->error_log, qr/\[(?:alert|emerg|crit)\]|exited on signal/,
    'no crash or alert in the error log';

done_testing;
