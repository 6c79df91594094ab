package MWTest::Owned;

# What the helpers that run a process (nginx, the fake inbox and Graph
# API, memcached) share: each has stop() and an {owner}, the pid that
# started it, and is stopped by that process alone, when it goes away or
# when the test ends (_cleanup, called for every object in @MWTest::LIVE).

use strict;
use warnings;

sub _cleanup { $_[0]->stop }

sub DESTROY {
    my ($self) = @_;
    return unless $$ == ($self->{owner} // 0);
    local ($@, $!, $?);
    $self->stop;
}

1;
