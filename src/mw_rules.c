/*
 * The customer-service window and the accounting periods.  Pure arithmetic
 * on Unix seconds: "now" is always a parameter, so the tests can walk
 * through month ends and leap years without waiting for them.
 */

#include "mw_core.h"


int64_t
mw_window_from(int64_t ts, int64_t now)
{
    if (ts < 0) {
        return now;
    }

    if (ts > now + MW_FUTURE_SKEW) {
        return now + MW_FUTURE_SKEW;
    }

    return ts;
}


int64_t
mw_window_advance(int64_t current_expires, int64_t from)
{
    int64_t  expires;

    expires = from + MW_WINDOW_SECONDS;

    return expires > current_expires ? expires : current_expires;
}


int
mw_window_open(int64_t expires, int64_t now)
{
    return now < expires;
}


int
mw_window_refused(int64_t expires, int64_t session)
{
    return expires != 0 && expires == session;
}


/* Days since 1970-01-01 of a civil date (proleptic Gregorian). */

static int64_t
mw_days_from_civil(int64_t y, int64_t m, int64_t d)
{
    int64_t  era, yoe, doy, doe;

    y -= m <= 2;
    era = (y >= 0 ? y : y - 399) / 400;
    yoe = y - era * 400;
    doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;

    return era * 146097 + doe - 719468;
}


static void
mw_civil_from_days(int64_t z, int64_t *y, int64_t *m, int64_t *d)
{
    int64_t  era, doe, yoe, doy, mp;

    z += 719468;
    era = (z >= 0 ? z : z - 146096) / 146097;
    doe = z - era * 146097;
    yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    mp = (5 * doy + 2) / 153;

    *d = doy - (153 * mp + 2) / 5 + 1;
    *m = mp < 10 ? mp + 3 : mp - 9;
    *y = yoe + era * 400 + (*m <= 2);
}


static int64_t
mw_month_days(int64_t y, int64_t m)
{
    static const int  days[12] = { 31, 28, 31, 30, 31, 30,
                                   31, 31, 30, 31, 30, 31 };

    if (m == 2 && ((y % 4 == 0 && y % 100 != 0) || y % 400 == 0)) {
        return 29;
    }

    return days[m - 1];
}


static int64_t
mw_floor_div(int64_t a, int64_t b)
{
    return a / b - (a % b != 0 && (a < 0) != (b < 0));
}


/* The first second of the anchor day in month (y, m), local time. */

static int64_t
mw_anchor_start(int64_t y, int64_t m, int anchor_day, int64_t tz_offset)
{
    int64_t  d, md;

    md = mw_month_days(y, m);
    d = anchor_day > md ? md : anchor_day;

    return mw_days_from_civil(y, m, d) * 86400 - tz_offset;
}


void
mw_period(int64_t now, int anchor_day, int64_t tz_offset, int64_t *start,
    int64_t *end)
{
    int64_t  y, m, d, s, ny, nm;

    if (anchor_day < 1) {
        anchor_day = 1;

    } else if (anchor_day > 31) {
        anchor_day = 31;
    }

    mw_civil_from_days(mw_floor_div(now + tz_offset, 86400), &y, &m, &d);

    s = mw_anchor_start(y, m, anchor_day, tz_offset);

    if (now < s) {
        /* before this month's anchor: the period began last month */
        ny = m == 1 ? y - 1 : y;
        nm = m == 1 ? 12 : m - 1;

        *start = mw_anchor_start(ny, nm, anchor_day, tz_offset);
        *end = s;
        return;
    }

    ny = m == 12 ? y + 1 : y;
    nm = m == 12 ? 1 : m + 1;

    *start = s;
    *end = mw_anchor_start(ny, nm, anchor_day, tz_offset);
}


void
mw_day(int64_t now, int64_t tz_offset, int64_t *start, int64_t *end)
{
    int64_t  days;

    days = mw_floor_div(now + tz_offset, 86400);

    *start = days * 86400 - tz_offset;
    *end = *start + 86400;
}


void
mw_session_advance(int64_t *window, int64_t *session, int64_t from)
{
    /* the window had closed, or never opened: this message starts anew */
    if (from >= *window) {
        *session = from;

    } else if (mw_window_refused(*window, *session)) {
        /*
         * Closed by Meta's refusal at *window, after this message: a
         * delivery of it that comes late, or a backend writing it again,
         * must not reopen what Meta has closed.
         */
        return;
    }

    *window = mw_window_advance(*window, from);
}
