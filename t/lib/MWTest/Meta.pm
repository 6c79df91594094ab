package MWTest::Meta;

# Builders of Meta-shaped WhatsApp Business webhook deliveries, written
# to the exact bytes a test wants to sign.
#
# Objects keep their key order (obj(k => v, ...)); timestamps are decimal
# strings as Meta sends them; numbers are num(...); raw(...) puts JSON
# text in verbatim (hostile tests).  encode(..., escape => 'meta') writes
# non-ASCII and "/ < % @" as \uXXXX, the way Meta's bodies arrive, so
# that a module signing re-serialized JSON instead of the raw bytes fails.
#
#   my $bytes = delivery(messages => [ msg_text(body => 'hi') ]);
#   my $bytes = delivery(statuses => [ status_update(status => 'read') ]);
#   my $bytes = batch(entries => [ { changes => [ {messages => [...]} ] } ]);

use strict;
use warnings;
use utf8;

use Exporter 'import';

our @EXPORT = qw(
    obj num raw true false encode
    wamid now_ts new_contact
    WABA_ID PNID PNID2 DISPLAY CONTACT CONTACT2
    msg_text msg_image msg_video msg_audio msg_document msg_sticker
    msg_location msg_contacts msg_interactive msg_button msg_reaction
    msg_order msg_system msg_request_welcome msg_revoke msg_edit
    msg_unsupported msg_unknown msg_generic
    status_update status_deleted
    value change entry delivery batch big_batch
);

use constant {
    WABA_ID  => '102290129340398',
    PNID     => '106540352242922',
    PNID2    => '106540352242923',
    DISPLAY  => '15550783881',
    CONTACT  => '16505551234',
    CONTACT2 => '447700900123',
};

# --- JSON with ordered keys

sub obj  { bless [@_], 'MWTest::Meta::Obj' }
sub num  { my $v = shift; bless \$v, 'MWTest::Meta::Num' }
sub raw  { my $v = shift; bless \$v, 'MWTest::Meta::Raw' }
sub true  { raw('true') }
sub false { raw('false') }

my %ESC = ("\"" => '\\"', "\\" => '\\\\', "\n" => '\\n', "\r" => '\\r',
           "\t" => '\\t', "\b" => '\\b', "\f" => '\\f');

sub _str {
    my ($s, $meta) = @_;
    $s =~ s{([\x00-\x1f"\\\x7f])}{$ESC{$1} // sprintf('\u%04x', ord $1)}ge;
    if ($meta) {
        $s =~ s{([/<>%@&])}{sprintf '\u%04x', ord $1}ge;
        $s =~ s{([^\x00-\x7f])}{_uesc(ord $1)}ge;
    }
    return '"' . $s . '"';
}

sub _uesc {
    my ($o) = @_;
    return sprintf '\u%04x', $o if $o <= 0xffff;
    my $v = $o - 0x10000;
    return sprintf '\u%04x\u%04x', 0xd800 | ($v >> 10), 0xdc00 | ($v & 0x3ff);
}

sub _enc {
    my ($v, $meta) = @_;
    return 'null' unless defined $v;
    my $r = ref $v;
    if ($r eq 'MWTest::Meta::Obj') {
        my @p;
        for (my $i = 0; $i < @$v; $i += 2) {
            my ($k, $x) = ($v->[$i], $v->[$i + 1]);
            next if $k =~ /^_/;         # builder annotations
            push @p, _str($k, $meta) . ':' . _enc($x, $meta);
        }
        return '{' . join(',', @p) . '}';
    }
    return ${$v} if $r eq 'MWTest::Meta::Num' || $r eq 'MWTest::Meta::Raw';
    if ($r eq 'ARRAY') {
        return '[' . join(',', map { _enc($_, $meta) } @$v) . ']';
    }
    if ($r eq 'HASH') {
        return '{' . join(',', map { _str($_, $meta) . ':'
                                     . _enc($v->{$_}, $meta) }
                                   sort keys %$v) . '}';
    }
    return _str("$v", $meta);
}

# encode($value, escape => 'meta' (default) | 'utf8'): bytes
sub encode {
    my ($v, %o) = @_;
    my $meta = ($o{escape} // 'meta') eq 'meta';
    my $s = _enc($v, $meta);
    utf8::encode($s);
    return $s;
}

# The value of key $k in an obj (for the tests' expectations)
sub MWTest::Meta::Obj::get {
    my ($self, $k) = @_;
    for (my $i = 0; $i < @$self; $i += 2) {
        return $self->[$i + 1] if $self->[$i] eq $k;
    }
    return undef;
}

# A plain Perl structure of an obj tree: what a JSON decoder gives back
# for it (numbers as numbers, raw true/false as JSON::PP booleans).
sub plain {
    my ($v) = @_;
    my $r = ref $v;
    return $v unless $r;
    if ($r eq 'MWTest::Meta::Obj') {
        my %h;
        for (my $i = 0; $i < @$v; $i += 2) {
            next if $v->[$i] =~ /^_/;
            $h{ $v->[$i] } = plain($v->[$i + 1]);
        }
        return \%h;
    }
    return 0 + ${$v} if $r eq 'MWTest::Meta::Num';
    if ($r eq 'MWTest::Meta::Raw') {
        return JSON::PP::true()  if ${$v} eq 'true';
        return JSON::PP::false() if ${$v} eq 'false';
        return JSON::PP->new->allow_nonref->decode(${$v});
    }
    return [ map { plain($_) } @$v ] if $r eq 'ARRAY';
    return { map { $_ => plain($v->{$_}) } keys %$v } if $r eq 'HASH';
    return $v;
}
{ no warnings "once"; *MWTest::Meta::Obj::plain = \&plain; }

# --- ids and times

my $IDSEQ = 0;
my @B64 = ('A' .. 'Z', 'a' .. 'z', '0' .. '9');

# A wamid that looks like Meta's: "wamid.HBgL" + base64-ish + "=".
# Unique per process and per test run.
sub wamid {
    my $s = sprintf '%s%d%06d', join('', map { $B64[rand @B64] } 1 .. 10),
                    $$, ++$IDSEQ;
    return "wamid.HBgLMTY1MDU1NTEyMzQVAgASGBQz$s" . 'QUIA=';
}

sub now_ts { time() }

# a wa_id no other update of this test run uses
my $CSEQ = 0;
sub new_contact { sprintf '1650%03d%04d', $$ % 1000, ++$CSEQ }

# --- messages (each returns an obj; _name is the contact's profile name,
#     used by delivery() to build contacts[], never sent)

sub _msg {
    my ($o, $type, @typed) = @_;
    # a contact known only by a business-scoped user id: from_user_id
    my @who = defined $o->{user_id} ? (from_user_id => $o->{user_id})
                                    : (from => $o->{from} // CONTACT);
    my @m = (
        _name     => exists $o->{name} ? $o->{name} : 'Alice Example',
        @who,
        id        => $o->{id} // wamid(),
        timestamp => defined $o->{ts} ? "$o->{ts}" : '' . (now_ts() - 30),
    );
    push @m, context => $o->{context} if $o->{context};
    push @m, type => $type, @typed;
    push @m, @{ $o->{extra} } if $o->{extra};
    return obj(@m);
}

sub msg_text {
    my (%o) = @_;
    return _msg(\%o, 'text', text => obj(body => $o{body} // 'Hello'));
}

sub _media {
    my ($type, $mime, %o) = @_;
    my @f;
    push @f, caption => $o{caption} if defined $o{caption};
    push @f, filename => $o{filename} if defined $o{filename};
    push @f, mime_type => $o{mime_type} // $mime,
             sha256 => $o{sha256} // 'Xl3K1hLQ9ZJkoGiHbAbCkfQvQm4p/Y0=',
             id => $o{media_id} // '1249345623098753';
    push @f, voice => $o{voice} ? true() : false() if exists $o{voice};
    push @f, animated => false() if $type eq 'sticker';
    return _msg(\%o, $type, $type => obj(@f));
}

sub msg_image    { _media('image', 'image/jpeg', @_) }
sub msg_video    { _media('video', 'video/mp4', @_) }
sub msg_audio    { _media('audio', 'audio/ogg; codecs=opus', @_) }
sub msg_document { _media('document', 'application/pdf',
                          filename => 'invoice.pdf', @_) }
sub msg_sticker  { _media('sticker', 'image/webp', @_) }

sub msg_location {
    my (%o) = @_;
    return _msg(\%o, 'location', location => obj(
        address => '1 Hacker Way, Menlo Park, CA 94025',
        latitude => num('37.4843'), longitude => num('-122.1484'),
        name => 'Meta HQ', url => 'https://www.facebook.com/'));
}

sub msg_contacts {
    my (%o) = @_;
    return _msg(\%o, 'contacts', contacts => [ obj(
        name => obj(first_name => 'Bob', formatted_name => 'Bob Builder',
                    last_name => 'Builder'),
        phones => [ obj(phone => '+1 (650) 555-0199', type => 'CELL',
                        wa_id => '16505550199') ],
        emails => [ obj(email => 'bob@example.com', type => 'WORK') ],
    ) ]);
}

sub msg_interactive {
    my (%o) = @_;
    my $kind = $o{kind} // 'button_reply';
    my $i = $kind eq 'list_reply'
        ? obj(type => 'list_reply', list_reply => obj(id => 'row-2',
              title => 'Tuesday', description => '10:00 - 12:00'))
        : $kind eq 'nfm_reply'
        ? obj(type => 'nfm_reply', nfm_reply => obj(
              name => 'flow', body => 'Sent',
              response_json => '{"flow_token":"tok-1","rating":"5"}'))
        : obj(type => 'button_reply', button_reply => obj(id => 'btn-yes',
              title => 'Yes please'));
    return _msg(\%o, 'interactive', interactive => $i);
}

sub msg_button {
    my (%o) = @_;
    return _msg(\%o, 'button', button => obj(
        payload => $o{payload} // 'UNSUBSCRIBE_PROMO',
        text => $o{text} // 'Stop promotions'));
}

# msg_reaction(to => wamid, emoji => "👍"); emoji => undef: removed
sub msg_reaction {
    my (%o) = @_;
    my @r = (message_id => $o{to} // wamid());
    push @r, emoji => $o{emoji} // "\x{1f44d}" unless exists $o{emoji}
                                                 && !defined $o{emoji};
    return _msg(\%o, 'reaction', reaction => obj(@r));
}

sub msg_order {
    my (%o) = @_;
    return _msg(\%o, 'order', order => obj(
        catalog_id => '1456709998111244', text => 'Please deliver soon',
        product_items => [ obj(product_retailer_id => 'SKU-1',
            quantity => num(2), item_price => num('12.5'),
            currency => 'USD') ]));
}

sub msg_system {
    my (%o) = @_;
    return _msg(\%o, 'system', system => obj(
        body => 'User A changed from 16505551234 to 16505559999',
        wa_id => '16505559999', type => 'user_changed_number'));
}

sub msg_request_welcome {
    my (%o) = @_;
    return _msg(\%o, 'request_welcome');
}

sub msg_revoke {
    my (%o) = @_;
    return _msg(\%o, 'revoke', revoke => obj(
        original_message_id => $o{original} // wamid()));
}

sub msg_edit {
    my (%o) = @_;
    return _msg(\%o, 'edit', edit => obj(
        original_message_id => $o{original} // wamid(),
        message => obj(type => 'text',
                       text => obj(body => $o{body} // 'Edited text'))));
}

sub msg_unsupported {
    my (%o) = @_;
    return _msg(\%o, 'unsupported',
        errors => [ obj(code => num(131051),
            title => 'Message type unknown',
            message => 'Message type unknown',
            error_data => obj(details =>
                'Message type is currently not supported.')) ],
        unsupported => obj(type => $o{what} // 'poll_creation'));
}

sub msg_unknown {
    my (%o) = @_;
    return _msg(\%o, 'unknown', errors => [ obj(code => num(131051),
        title => 'Message type unknown',
        details => 'Message type is not currently supported') ]);
}

# any type with any type object: msg_generic(type => 'x', object => obj)
sub msg_generic {
    my (%o) = @_;
    return _msg(\%o, $o{type}, defined $o{object}
                ? ($o{type} => $o{object}) : ());
}

# --- statuses

sub status_update {
    my (%o) = @_;
    my $st = $o{status} // 'delivered';
    my @s = (
        id => $o{id} // wamid(),
        status => $st,
        timestamp => defined $o{ts} ? "$o{ts}" : '' . (now_ts() - 10),
        defined $o{recipient_user_id}
            ? (recipient_user_id => $o{recipient_user_id})
            : (recipient_id => $o{recipient} // CONTACT),
    );
    if ($o{conversation} // ($st ne 'read' && $st ne 'failed')) {
        push @s, conversation => obj(id => 'CONVERSATION_ID_1',
            expiration_timestamp => '' . (now_ts() + 86400),
            origin => obj(type => 'service'));
        push @s, pricing => obj(billable => true(),
            pricing_model => 'PMP', category => 'service',
            type => 'regular');
    }
    if ($o{errors}) {
        push @s, errors => [ map { _status_error($_) } @{ $o{errors} } ];
    }
    return obj(@s);
}

sub _status_error {
    my ($code) = @_;
    my %t = (
        131047 => ['Re-engagement message',
                   'Message failed to send because more than 24 hours have passed since the customer last replied to this number.'],
        131026 => ['Message undeliverable',
                   'Unable to deliver message. Reasons can include: the recipient phone number is not a WhatsApp phone number.'],
    );
    my $t = $t{$code} // ['Error', 'Error'];
    return obj(code => num($code), title => $t->[0], message => $t->[0],
               error_data => obj(details => $t->[1]),
               href => 'https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes/');
}

# the legacy form of a deletion: statuses[].status "deleted"
sub status_deleted {
    my (%o) = @_;
    return obj(id => $o{id} // wamid(), recipient_id => $o{recipient}
               // CONTACT, status => 'deleted',
               timestamp => defined $o{ts} ? "$o{ts}" : '' . (now_ts() - 5));
}

# --- envelopes

# value(pnid =>, display =>, messages => [...], statuses => [...],
#       contacts => [[name, wa_id], ...] (default: from the messages),
#       errors => [...], extra => [k => v])
sub value {
    my (%o) = @_;
    my @v = (messaging_product => 'whatsapp',
             metadata => obj(display_phone_number => $o{display} // DISPLAY,
                             phone_number_id => $o{pnid} // PNID));
    my $contacts = $o{contacts};
    if (!$contacts && $o{messages} && @{ $o{messages} }) {
        my (%seen, @c);
        for my $m (@{ $o{messages} }) {
            next unless ref $m eq 'MWTest::Meta::Obj';
            if (defined(my $uid = $m->get('from_user_id'))) {
                next if $seen{$uid}++;
                my $n = $m->get('_name');
                push @c, obj(defined $n ? (profile => obj(name => $n)) : (),
                             user_id => $uid);
                next;
            }
            my $from = $m->get('from') // next;
            next if $seen{$from}++;
            push @c, [ $m->get('_name'), $from ];
        }
        $contacts = \@c;
    }
    if ($contacts && @$contacts) {
        push @v, contacts => [ map {
            ref $_ eq 'ARRAY'
            ? obj(defined $_->[0] ? (profile => obj(name => $_->[0])) : (),
                  wa_id => $_->[1])
            : $_
        } @$contacts ];
    }
    push @v, messages => $o{messages} if $o{messages};
    push @v, statuses => $o{statuses} if $o{statuses};
    push @v, errors => $o{errors} if $o{errors};
    push @v, @{ $o{extra} } if $o{extra};
    return obj(@v);
}

sub change {
    my (%o) = @_;
    return obj(value => $o{value} // value(%o),
               field => $o{field} // 'messages');
}

sub entry {
    my (%o) = @_;
    my $changes = $o{changes} // [ change(%o) ];
    return obj(id => $o{waba} // WABA_ID,
               changes => [ map { ref $_ eq 'HASH' ? change(%$_) : $_ }
                            @$changes ]);
}

sub _envelope {
    my ($entries) = @_;
    return obj(object => 'whatsapp_business_account', entry => $entries);
}

# one entry, one change: delivery(messages => [...], statuses => [...])
# returns bytes; delivery_obj returns the tree
sub delivery {
    my (%o) = @_;
    my $escape = delete $o{escape};
    return encode(_envelope([ entry(%o) ]), escape => $escape);
}

sub delivery_obj {
    my (%o) = @_;
    return _envelope([ entry(%o) ]);
}

# batch(entries => [ {waba =>, changes => [ {pnid =>, messages =>,
#       statuses =>}, ... ]}, ... ])
sub batch {
    my (%o) = @_;
    my $escape = delete $o{escape};
    my @e = map { ref $_ eq 'HASH' ? entry(%$_) : $_ } @{ $o{entries} };
    return encode(_envelope(\@e), escape => $escape);
}

# $n updates: text messages from distinct contacts, spread over
# $entries entries x $changes changes each.  Returns (bytes, [ids]).
sub big_batch {
    my (%o) = @_;
    my $n = $o{n} // 1000;
    my $ne = $o{entries} // 4;
    my $nc = $o{changes} // 5;
    my $per = int(($n + $ne * $nc - 1) / ($ne * $nc));
    my @ids;
    my @entries;
    my $k = 0;
    my $ts = now_ts() - 120;
    for my $e (1 .. $ne) {
        my @changes;
        for my $c (1 .. $nc) {
            my @m;
            while (@m < $per && $k < $n) {
                $k++;
                my $id = wamid();
                push @ids, $id;
                push @m, msg_text(id => $id, ts => $ts,
                    from => sprintf('1650555%04d', $k),
                    name => "Contact $k",
                    body => "Message number $k \x{e9}t\x{e9} / r\x{e9}sum\x{e9}");
            }
            push @changes, change(messages => \@m) if @m;
        }
        push @entries, entry(changes => \@changes) if @changes;
    }
    return (encode(_envelope(\@entries), escape => $o{escape}), \@ids);
}

1;
