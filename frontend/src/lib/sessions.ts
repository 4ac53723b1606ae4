// A venue's coming days from its calendar, as the API answers `session(at:)`: two aliased
// queries, no new API. At each local midnight the session's `nextOpen` tells whether that day
// trades (it opens that day) and `nextClose` its first stop; asked again just after that stop,
// a BREAK status gives the break's end (`nextOpen`) and the day's close (`closesAt`). A weekday
// that does not trade is a holiday; Saturday and Sunday are the weekend.

export interface SessionAnswer {
  status: string; opensAt: string | null; closesAt: string | null; nextOpen: string | null; nextClose: string | null;
}

export interface VenueDay {
  date: string; // YYYY-MM-DD, the venue's local day
  kind: "trading" | "holiday" | "weekend";
  opens?: string; // instants (ISO)
  closes?: string;
  breaks: { start: string; end: string }[];
}

/** The UTC offset (ms) of `timeZone` at instant `t`. */
export function zoneOffset(t: number, timeZone: string): number {
  const parts = new Intl.DateTimeFormat("en-US", {
    timeZone, hourCycle: "h23", year: "numeric", month: "2-digit", day: "2-digit",
    hour: "2-digit", minute: "2-digit", second: "2-digit",
  }).formatToParts(new Date(t));
  const get = (type: string) => Number(parts.find((p) => p.type === type)?.value);
  const asUtc = Date.UTC(get("year"), get("month") - 1, get("day"), get("hour") % 24, get("minute"), get("second"));
  return asUtc - Math.floor(t / 1000) * 1000;
}

/** The instant of local midnight starting `date` (YYYY-MM-DD) in `timeZone`. */
export function localMidnight(date: string, timeZone: string): number {
  const guess = Date.parse(`${date}T00:00:00Z`);
  let t = guess - zoneOffset(guess, timeZone);
  t = guess - zoneOffset(t, timeZone); // again, across a DST change
  return t;
}

/** The venue's local date (YYYY-MM-DD) of instant `t`. */
export function localDate(t: number, timeZone: string): string {
  return new Date(t + zoneOffset(t, timeZone)).toISOString().slice(0, 10);
}

/** The next `days` local dates from `now`, today first. */
export function comingDates(now: number, timeZone: string, days: number): string[] {
  const first = Date.parse(`${localDate(now, timeZone)}T00:00:00Z`);
  return Array.from({ length: days }, (_, i) => new Date(first + i * 86_400_000).toISOString().slice(0, 10));
}

/** One aliased query: `session(at:)` of `mic` at each instant, as d0, d1… */
export function sessionsQuery(mic: string, instants: number[]): string {
  const fields = instants.map((t, i) =>
    `d${i}: session(at: "${new Date(t).toISOString()}") { status opensAt closesAt nextOpen nextClose }`).join(" ");
  return `query VenueDays { venue(mic: ${JSON.stringify(mic)}) { mic ${fields || "__typename"} } }`;
}

/** Round one's answers (at each local midnight) → the days, and the instants to ask in round two. */
export function firstRound(dates: string[], answers: SessionAnswer[], timeZone: string): {
  days: VenueDay[]; probes: { day: number; at: number }[];
} {
  const days: VenueDay[] = [];
  const probes: { day: number; at: number }[] = [];
  dates.forEach((date, i) => {
    const a = answers[i];
    const open = a?.nextOpen ? Date.parse(a.nextOpen) : NaN;
    const opensToday = Number.isFinite(open) && localDate(open, timeZone) === date;
    // Open at midnight (a session over midnight) counts as trading too.
    const openNow = a?.status === "OPEN" && a.closesAt && localDate(Date.parse(a.closesAt), timeZone) === date;
    if (opensToday || openNow) {
      const day: VenueDay = { date, kind: "trading", breaks: [], opens: opensToday ? a!.nextOpen! : a!.opensAt ?? undefined,
        closes: a!.nextClose ?? undefined };
      days.push(day);
      if (a!.nextClose) probes.push({ day: days.length - 1, at: Date.parse(a!.nextClose) + 1000 });
    } else {
      const weekday = new Date(`${date}T12:00:00Z`).getUTCDay();
      days.push({ date, kind: weekday === 0 || weekday === 6 ? "weekend" : "holiday", breaks: [] });
    }
  });
  return { days, probes };
}

/** Round two: just after a day's first stop, a BREAK means the stop was a break's start. */
export function secondRound(days: VenueDay[], probes: { day: number; at: number }[], answers: SessionAnswer[]): VenueDay[] {
  const out = days.map((d) => ({ ...d, breaks: [...d.breaks] }));
  probes.forEach((p, i) => {
    const a = answers[i];
    const day = out[p.day];
    if (!a || !day) return;
    if (a.status === "BREAK" && day.closes && a.nextOpen) {
      day.breaks.push({ start: day.closes, end: a.nextOpen });
      day.closes = a.closesAt ?? a.nextClose ?? day.closes;
    }
  });
  return out;
}
