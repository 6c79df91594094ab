package MWTest::Response;

# An HTTP answer as read off the socket: status, headers (repeatable,
# case-insensitive), body (de-chunked), and the raw bytes.

use strict;
use warnings;

use JSON::PP ();

sub error {
    my ($class, $msg, $raw) = @_;
    return bless { status => 0, error => $msg, headers => [], body => '',
                   raw => $raw // '' }, $class;
}

sub parse {
    my ($class, $raw) = @_;
    my $i = index $raw, "\r\n\r\n";
    return $class->error('no header end in answer', $raw) if $i < 0;
    my $head = substr $raw, 0, $i;
    my $body = substr $raw, $i + 4;
    my ($line, @lines) = split /\r\n/, $head;
    return $class->error("bad status line: $line", $raw)
        unless $line =~ m{^HTTP/\d\.\d (\d{3})(?: (.*))?$};
    my ($status, $reason) = ($1, $2 // '');
    my @h;
    for (@lines) {
        my ($k, $v) = /^([^:]+):\s*(.*?)\s*$/ or next;
        push @h, [lc $k, $v];
    }
    my $self = bless { status => $status + 0, reason => $reason,
                       headers => \@h, raw => $raw }, $class;
    my $te = $self->header('transfer-encoding') // '';
    if ($te =~ /chunked/i) {
        my $out = '';
        while ($body =~ s/^([0-9a-fA-F]+)[^\r\n]*\r\n//) {
            my $n = hex $1;
            last if $n == 0;
            $out .= substr $body, 0, $n;
            substr($body, 0, $n + 2) = '';
        }
        $body = $out;
    } elsif (defined(my $cl = $self->header('content-length'))) {
        $body = substr $body, 0, $cl if length $body > $cl;
    }
    $self->{body} = $body;
    return $self;
}

sub status  { $_[0]{status} }
sub reason  { $_[0]{reason} }
sub body    { $_[0]{body} }
sub raw     { $_[0]{raw} }
sub error_message { $_[0]{error} }

# the first value of a header, or undef
sub header {
    my ($self, $name) = @_;
    $name = lc $name;
    for (@{ $self->{headers} }) { return $_->[1] if $_->[0] eq $name }
    return undef;
}

# every value of a header
sub headers {
    my ($self, $name) = @_;
    $name = lc $name;
    return map { $_->[1] } grep { $_->[0] eq $name } @{ $self->{headers} };
}

sub json {
    my ($self) = @_;
    return eval { JSON::PP->new->utf8->decode($self->{body}) };
}

# "200 <body>" for test diagnostics
sub summary {
    my ($self) = @_;
    return "error: $self->{error}" if $self->{error};
    my $b = $self->{body};
    $b = substr($b, 0, 300) . '...' if length $b > 300;
    return "$self->{status} $b";
}

1;
