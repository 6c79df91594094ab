#!/usr/bin/perl
# meta_webhook_json_reader: the same deliveries through "fast" (the
# default: the module's reader first, jansson for the rest) and "jansson"
# (json_loadb alone) reach the application as the same bytes, and are
# answered the same way, valid or not.

use strict;
use warnings;
use utf8;
use Test::More;
use lib 't/lib';
use MWTest;
use MWTest::Meta;

plan skip_all => "no module at $MODULE (run make)" unless -f $MODULE;

my (%ng, %inbox);
for my $reader (qw(fast jansson)) {
    ($ng{$reader}, $inbox{$reader}) = setup(
        webhook_extra => "meta_webhook_json_reader $reader;\n"
                       . "    meta_webhook_dead_letter_path %DIR%/dead;");
}

my $TS = now_ts() - 60;

# name => bytes; every message type, every status, Meta's escaping and
# raw UTF-8, reals and integers beyond 64 bits, and broken bodies
my @cases;

sub add { push @cases, [@_, 1] }
sub add_broken { push @cases, [@_, 0] }

my $odd = "quote \" backslash \\ slash / tab \t new\nline CR\r\n "
        . "nul \x{0} ctl \x{1} del \x{7f} é € 😊 \x{10ffff} \x{fffd}";

for my $esc (qw(meta raw)) {
    add("text, $esc escaping", delivery(escape => $esc,
        messages => [ msg_text(ts => $TS, body => $odd,
                               name => "Jo\x{e3}o\r\nX-Injected: 1") ]));
}

my %gen = (image => \&msg_image, video => \&msg_video,
    audio => \&msg_audio, document => \&msg_document,
    sticker => \&msg_sticker, location => \&msg_location,
    contacts => \&msg_contacts, button => \&msg_button,
    reaction => \&msg_reaction, order => \&msg_order,
    system => \&msg_system, request_welcome => \&msg_request_welcome,
    revoke => \&msg_revoke, edit => \&msg_edit,
    unsupported => \&msg_unsupported, unknown => \&msg_unknown);

for my $type (sort keys %gen) {
    add($type, delivery(messages => [ $gen{$type}->(ts => $TS) ]));
}

for my $kind (qw(button_reply list_reply nfm_reply)) {
    add("interactive $kind", delivery(messages => [
        msg_interactive(ts => $TS, kind => $kind) ]));
}

add('reaction removed', delivery(messages => [
    msg_reaction(ts => $TS, emoji => undef) ]));

add('unknown type with nested numbers', delivery(messages => [
    msg_generic(ts => $TS, type => 'poll', object => obj(
        question => 'Q?', options => [ 1, 2, num('2.5'), num('-0'),
            num('1e3'), num('-1.25E-7'), num('123456789012345678'),
            num('-9223372036854775808'),
            num('123456789012345678901234567890'), true(), false(),
            raw('null'), obj(), [] ])) ],
    extra => [ big => num('99999999999999999999'), neg => num('-42') ]));

add('statuses', delivery(statuses => [
    status_update(status => 'sent'), status_update(status => 'delivered'),
    status_update(status => 'read'),
    status_update(status => 'failed', errors => [131047]),
    status_deleted() ]));

my ($big) = big_batch(n => 300, entries => 3, changes => 4);
add('a batch of 300', $big);

# invalid, each signed: answered the same way (dead-lettered, 200)
add_broken('duplicate key', '{"object":"whatsapp_business_account","entry":[],'
                   . '"entry":[]}');
add_broken('invalid UTF-8', qq({"object":"whatsapp_business_account","entry":)
                   . qq([{"id":"\xc0\x80"}]}));
add_broken('lone surrogate', '{"object":"whatsapp_business_account",'
                    . '"entry":[{"id":"\ud800"}]}');
add_broken('\u0000 in a key', '{"object":"whatsapp_business_account",'
                     . '"entry":[],"\u0000":1}');
add_broken('trailing bytes', '{"object":"whatsapp_business_account",'
                    . '"entry":[]} x');
add_broken('too deep', '[' x 65 . ']' x 65);
add_broken('truncated', substr($big, 0, length($big) / 2));

for my $c (@cases) {
    my ($name, $body, $valid) = @$c;
    my %got;
    for my $reader (qw(fast jansson)) {
        $inbox{$reader}->clear;
        my $r = $ng{$reader}->deliver($body);
        $got{$reader} = {
            status => $r->status,
            result => $r->header('x-mw-result') // '',
            bodies => [ map { $_->{body} } $inbox{$reader}->raw_requests ],
        };
    }
    my ($f, $j) = @got{qw(fast jansson)};
    is $f->{status}, $j->{status}, "$name: the same status ($j->{status})";
    is $f->{result}, $j->{result}, "$name: the same result ($j->{result})";
    is scalar @{ $f->{bodies} }, scalar @{ $j->{bodies} },
        "$name: the same number of hand-offs";
    ok @{ $f->{bodies} } == @{ $j->{bodies} }
        && !grep({ $f->{bodies}[$_] ne $j->{bodies}[$_] }
                 0 .. $#{ $f->{bodies} }),
        "$name: the application got the same bytes";
    if ($valid) {
        is $j->{result}, 'new', "$name: handed off";
        like $f->{bodies}[0] // '', qr/^\{"events":\[\{/,
            "$name: as events";
    }
}

# the broken ones are not vacuous either: each was kept
cmp_ok scalar(grep { $_->[2] } @cases), '>=', 25,
    'at least 25 valid deliveries compared';
my @dead = glob($ng{fast}->dead_dir . '/*');
is scalar @dead, 7, 'fast: the 7 broken bodies were dead-lettered';
@dead = glob($ng{jansson}->dead_dir . '/*');
is scalar @dead, 7, 'jansson: the 7 broken bodies were dead-lettered';

done_testing;
