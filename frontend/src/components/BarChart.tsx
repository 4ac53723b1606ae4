// A grouped bar chart (SVG) for categories such as backends: lightweight-charts draws time
// series, not categories. Values are shares in [0, 1].
import { barShare } from "../lib/optimise";

export function BarChart({ groups, series, label }: {
  groups: { name: string; values: (number | null)[] }[];
  series: { name: string; colour: string }[];
  label: string;
}) {
  const height = 220, top = 16, bottom = 46, left = 36;
  const groupWidth = Math.max(70, 36 * series.length + 24);
  const width = left + groups.length * groupWidth + 10;
  const plot = height - top - bottom;
  return (
    <figure className="bar-chart" data-groups={groups.length}>
      <svg role="img" aria-label={label} viewBox={`0 0 ${width} ${height}`} width="100%" height={height}
        preserveAspectRatio="xMinYMin meet">
        {[0, 0.5, 1].map((t) => (
          <g key={t}>
            <line x1={left} x2={width} y1={top + plot * (1 - t)} y2={top + plot * (1 - t)} stroke="currentColor" opacity={0.15} />
            <text x={left - 4} y={top + plot * (1 - t) + 4} fontSize={10} textAnchor="end" fill="currentColor">{t}</text>
          </g>
        ))}
        {groups.map((g, gi) => (
          <g key={g.name} transform={`translate(${left + gi * groupWidth + 12},0)`}>
            {g.values.map((v, si) => {
              const h = plot * barShare(v);
              return (
                <rect key={si} x={si * 36} y={top + plot - h} width={28} height={h} fill={series[si]?.colour}
                  data-series={series[si]?.name} data-value={v === null ? "" : String(v)}>
                  <title>{`${g.name} ${series[si]?.name}: ${v === null ? "n/a" : v.toFixed(4)}`}</title>
                </rect>
              );
            })}
            <text x={(series.length * 36) / 2 - 4} y={height - bottom + 16} fontSize={11} textAnchor="middle"
              fill="currentColor">{g.name}</text>
          </g>
        ))}
      </svg>
      <figcaption className="legend">
        {series.map((s) => <span key={s.name}><i style={{ background: s.colour }} /> {s.name}</span>)}
      </figcaption>
    </figure>
  );
}
