//! Random street scenes described in world coordinates and drawn through a
//! pinhole camera. Objects keep world positions so a scene can be animated
//! (cars drive, people walk) by the live demo source.

use rand::Rng;

use super::raster::{hash2, value_noise, Canvas};
use crate::classes::{train_id as id, IGNORE_LABEL};

type Rgb = [f32; 3];

/// Pinhole camera looking along +Z from `height` metres above flat ground.
#[derive(Debug, Clone, Copy)]
struct Camera {
    focal: f32,
    cx: f32,
    horizon: f32,
    height: f32,
}

impl Camera {
    /// Projects world (x, y, z) to pixel (u, v); y is up, z forward.
    fn project(&self, x: f32, y: f32, z: f32) -> (f32, f32) {
        (
            self.cx + self.focal * x / z,
            self.horizon + self.focal * (self.height - y) / z,
        )
    }

    /// Ground-plane point seen at pixel (u, v), if below the horizon.
    fn ground_at(&self, u: f32, v: f32) -> Option<(f32, f32)> {
        let dv = v - self.horizon;
        (dv > 0.01).then(|| {
            let z = self.focal * self.height / dv;
            ((u - self.cx) * z / self.focal, z)
        })
    }

    /// Point on the vertical plane x = `x` seen at pixel (u, v): (y, z).
    fn wall_at(&self, x: f32, u: f32, v: f32) -> (f32, f32) {
        let du = u - self.cx;
        let z = if du.abs() < 1e-3 {
            1e3
        } else {
            self.focal * x / du
        };
        (self.height - (v - self.horizon) * z / self.focal, z)
    }

    /// Pixels per metre at depth z.
    fn scale(&self, z: f32) -> f32 {
        self.focal / z
    }
}

#[derive(Debug, Clone, Copy)]
enum BarrierKind {
    Wall,
    Fence,
}

#[derive(Debug, Clone)]
enum Object {
    Car {
        x: f32,
        z: f32,
        color: Rgb,
        side_view: bool,
        speed: f32,
    },
    Person {
        x: f32,
        z: f32,
        height: f32,
        shirt: Rgb,
        pants: Rgb,
        speed: f32,
    },
    Pole {
        x: f32,
        z: f32,
        height: f32,
        top: PoleTop,
    },
    Tree {
        x: f32,
        z: f32,
        trunk: f32,
        radius: f32,
        tone: f32,
    },
    Barrier {
        x: f32,
        z0: f32,
        z1: f32,
        height: f32,
        kind: BarrierKind,
        color: Rgb,
    },
    Clutter {
        x: f32,
        z: f32,
        size: f32,
        color: Rgb,
    },
}

#[derive(Debug, Clone, Copy)]
enum PoleTop {
    Bare,
    Sign { round: bool, color: Rgb },
    Light,
}

impl Object {
    fn depth(&self) -> f32 {
        match *self {
            Object::Car { z, .. }
            | Object::Person { z, .. }
            | Object::Pole { z, .. }
            | Object::Tree { z, .. }
            | Object::Clutter { z, .. } => z,
            Object::Barrier { z0, .. } => z0,
        }
    }

    /// Barriers and trees stand at the outer edge: always behind the rest.
    fn layer(&self) -> u8 {
        match self {
            Object::Barrier { .. } | Object::Tree { .. } => 0,
            _ => 1,
        }
    }
}

#[derive(Debug, Clone)]
struct Facade {
    x: f32,
    z0: f32,
    z1: f32,
    height: f32,
    color: Rgb,
    window: Rgb,
    floor: f32,
    bay: f32,
}

/// One synthetic street scene: layout, objects and lighting, all in world units.
#[derive(Debug, Clone)]
pub struct Scene {
    width: usize,
    height: usize,
    cam: Camera,
    road: (f32, f32),
    sidewalk: (f32, f32),
    terrain: (f32, f32),
    lanes: Vec<f32>,
    sky: (Rgb, Rgb, f32),
    asphalt: Rgb,
    paving: Rgb,
    grass: Rgb,
    skyline: Vec<(f32, f32, Rgb)>,
    facades: Vec<Facade>,
    objects: Vec<Object>,
    gain: Rgb,
    noise: f32,
    blur: bool,
    seed: u32,
}

fn rgb(rng: &mut impl Rng, lo: f32, hi: f32) -> Rgb {
    [
        rng.random_range(lo..hi),
        rng.random_range(lo..hi),
        rng.random_range(lo..hi),
    ]
}

fn grey(rng: &mut impl Rng, lo: f32, hi: f32, tint: f32) -> Rgb {
    let g = rng.random_range(lo..hi);
    [
        g * rng.random_range(1.0 - tint..1.0 + tint),
        g * rng.random_range(1.0 - tint..1.0 + tint),
        g * rng.random_range(1.0 - tint..1.0 + tint),
    ]
}

fn scaled(c: Rgb, k: f32) -> Rgb {
    [c[0] * k, c[1] * k, c[2] * k]
}

const CAR_COLORS: [Rgb; 8] = [
    [200.0, 30.0, 30.0],
    [30.0, 60.0, 170.0],
    [230.0, 230.0, 230.0],
    [25.0, 25.0, 30.0],
    [140.0, 140.0, 150.0],
    [40.0, 120.0, 60.0],
    [220.0, 180.0, 40.0],
    [90.0, 40.0, 20.0],
];

impl Scene {
    /// Draws a random scene of `width` x `height` pixels from `rng`.
    pub fn random(rng: &mut impl Rng, width: usize, height: usize) -> Scene {
        let (w, h) = (width as f32, height as f32);
        let cam = Camera {
            focal: w * rng.random_range(0.55..0.9),
            cx: w * rng.random_range(0.35..0.65),
            horizon: h * rng.random_range(0.3..0.5),
            height: rng.random_range(1.2..1.9),
        };
        let offset = rng.random_range(-2.5..2.5);
        let road_w = rng.random_range(6.0..14.0);
        let road = (offset - road_w / 2.0, offset + road_w / 2.0);
        let sidewalk = (
            road.0 - rng.random_range(1.5..4.5),
            road.1 + rng.random_range(1.5..4.5),
        );
        let terrain = (
            sidewalk.0
                - if rng.random_bool(0.5) {
                    rng.random_range(0.5..4.0)
                } else {
                    0.0
                },
            sidewalk.1
                + if rng.random_bool(0.5) {
                    rng.random_range(0.5..4.0)
                } else {
                    0.0
                },
        );
        let lane_count = (road_w / 3.3f32).floor().max(1.0) as usize;
        let lanes = (1..lane_count)
            .map(|i| road.0 + road_w * i as f32 / lane_count as f32)
            .collect();
        let overcast = rng.random_bool(0.35);
        let sky = if overcast {
            let g = rng.random_range(150.0..220.0);
            (
                [g - 20.0, g - 15.0, g - 5.0],
                [g + 20.0, g + 20.0, g + 25.0],
                rng.random_range(0.2..0.6),
            )
        } else {
            (
                [
                    rng.random_range(30.0..90.0),
                    rng.random_range(90.0..150.0),
                    rng.random_range(180.0..240.0),
                ],
                [
                    rng.random_range(150.0..210.0),
                    rng.random_range(190.0..230.0),
                    rng.random_range(220.0..255.0),
                ],
                rng.random_range(0.0..0.5),
            )
        };
        let mut skyline = Vec::new();
        let mut u = -10.0;
        while u < w + 10.0 {
            let bw = rng.random_range(0.04..0.15) * w;
            let bh = rng.random_range(0.02..0.12) * h;
            let c = if rng.random_bool(0.3) {
                [
                    rng.random_range(50.0..90.0),
                    rng.random_range(80.0..120.0),
                    rng.random_range(40.0..70.0),
                ]
            } else {
                grey(rng, 90.0, 170.0, 0.08)
            };
            skyline.push((u, bh, c));
            u += bw;
        }
        let mut scene = Scene {
            width,
            height,
            cam,
            road,
            sidewalk,
            terrain,
            lanes,
            sky,
            asphalt: grey(rng, 55.0, 110.0, 0.04),
            paving: grey(rng, 120.0, 190.0, 0.08),
            grass: [
                rng.random_range(70.0..120.0),
                rng.random_range(130.0..180.0),
                rng.random_range(60.0..100.0),
            ],
            skyline,
            facades: Vec::new(),
            objects: Vec::new(),
            gain: [
                rng.random_range(0.55..1.25),
                rng.random_range(0.55..1.25),
                rng.random_range(0.55..1.25),
            ],
            noise: rng.random_range(0.0..9.0),
            blur: rng.random_bool(0.3),
            seed: rng.random(),
        };
        // Keep the colour cast mild: the gains share most of their value.
        let mean = (scene.gain[0] + scene.gain[1] + scene.gain[2]) / 3.0;
        for g in scene.gain.iter_mut() {
            *g = mean + (*g - mean) * 0.25;
        }
        scene.populate(rng);
        scene
    }

    fn populate(&mut self, rng: &mut impl Rng) {
        // Building facades on both sides, with gaps where trees show through.
        for side in [-1.0f32, 1.0] {
            let edge = if side < 0.0 {
                self.terrain.0
            } else {
                self.terrain.1
            };
            let x = edge + side * rng.random_range(0.0..3.0);
            let mut z = rng.random_range(1.0..8.0);
            while z < 160.0 {
                let len = rng.random_range(8.0..35.0);
                if rng.random_bool(0.8) {
                    self.facades.push(Facade {
                        x: x + side * rng.random_range(0.0..1.5),
                        z0: z,
                        z1: z + len,
                        height: rng.random_range(6.0..30.0),
                        color: if rng.random_bool(0.7) {
                            grey(rng, 70.0, 200.0, 0.15)
                        } else {
                            rgb(rng, 80.0, 200.0)
                        },
                        window: grey(rng, 20.0, 90.0, 0.2),
                        floor: rng.random_range(2.8..3.6),
                        bay: rng.random_range(2.0..4.0),
                    });
                }
                z += len + rng.random_range(0.0..6.0);
            }
        }
        let (sw_l, sw_r) = self.sidewalk;
        let (r_l, r_r) = self.road;
        // Walls and fences along the outer edge of the sidewalks.
        for side in [-1.0f32, 1.0] {
            let x = if side < 0.0 { sw_l } else { sw_r };
            let mut z = rng.random_range(2.0..20.0);
            while z < 80.0 && rng.random_bool(0.7) {
                let len = rng.random_range(4.0..25.0);
                let kind = if rng.random_bool(0.5) {
                    BarrierKind::Wall
                } else {
                    BarrierKind::Fence
                };
                self.objects.push(Object::Barrier {
                    x,
                    z0: z,
                    z1: z + len,
                    height: rng.random_range(0.8..2.2),
                    kind,
                    color: match kind {
                        BarrierKind::Wall => grey(rng, 110.0, 200.0, 0.1),
                        BarrierKind::Fence => grey(rng, 60.0, 140.0, 0.1),
                    },
                });
                z += len + rng.random_range(3.0..20.0);
            }
        }
        // Trees on the terrain strips (or the outer sidewalk).
        for _ in 0..rng.random_range(0..7) {
            let side = if rng.random_bool(0.5) { -1.0f32 } else { 1.0 };
            let (a, b) = if side < 0.0 {
                (self.terrain.0, sw_l)
            } else {
                (sw_r, self.terrain.1)
            };
            let x = if (b - a).abs() > 0.2 {
                rng.random_range(a.min(b)..a.max(b))
            } else {
                a
            };
            self.objects.push(Object::Tree {
                x,
                z: rng.random_range(3.0..70.0),
                trunk: rng.random_range(1.5..3.5),
                radius: rng.random_range(1.2..3.5),
                tone: rng.random_range(0.6..1.2),
            });
        }
        // Poles with signs and traffic lights at the kerb.
        for _ in 0..rng.random_range(1..6) {
            let x = if rng.random_bool(0.5) {
                r_l - 0.4
            } else {
                r_r + 0.4
            };
            let top = match rng.random_range(0..3) {
                0 => PoleTop::Bare,
                1 => PoleTop::Sign {
                    round: rng.random_bool(0.5),
                    color: [
                        [200.0, 30.0, 30.0],
                        [30.0, 70.0, 180.0],
                        [240.0, 200.0, 30.0],
                        [235.0, 235.0, 235.0],
                    ][rng.random_range(0..4)],
                },
                _ => PoleTop::Light,
            };
            self.objects.push(Object::Pole {
                x,
                z: rng.random_range(3.0..60.0),
                height: rng.random_range(3.0..7.0),
                top,
            });
        }
        // People on the sidewalks, now and then crossing the road.
        for _ in 0..rng.random_range(0..9) {
            let on_road = rng.random_bool(0.15);
            let x = if on_road {
                rng.random_range(r_l..r_r)
            } else if rng.random_bool(0.5) {
                rng.random_range(sw_l + 0.3..r_l - 0.2)
            } else {
                rng.random_range(r_r + 0.2..sw_r - 0.3)
            };
            self.objects.push(Object::Person {
                x,
                z: rng.random_range(2.5..45.0),
                height: rng.random_range(1.5..1.95),
                shirt: rgb(rng, 20.0, 240.0),
                pants: grey(rng, 20.0, 120.0, 0.3),
                speed: rng.random_range(-1.5..1.5),
            });
        }
        // Cars driving in the lanes and parked at the kerb.
        for _ in 0..rng.random_range(0..7) {
            let parked = rng.random_bool(0.35);
            let x = if parked {
                if rng.random_bool(0.5) {
                    r_l + 1.0
                } else {
                    r_r - 1.0
                }
            } else {
                rng.random_range(r_l + 1.0..r_r - 1.0)
            };
            let base = CAR_COLORS[rng.random_range(0..CAR_COLORS.len())];
            self.objects.push(Object::Car {
                x,
                z: rng.random_range(3.5..70.0),
                color: scaled(base, rng.random_range(0.75..1.15)),
                side_view: parked,
                speed: if parked {
                    0.0
                } else {
                    rng.random_range(-12.0..12.0)
                },
            });
        }
        // Unlabelled clutter (bins, boxes): marked "ignore" like Cityscapes' void.
        for _ in 0..rng.random_range(0..3) {
            self.objects.push(Object::Clutter {
                x: rng.random_range(sw_l + 0.3..sw_r - 0.3),
                z: rng.random_range(3.0..40.0),
                size: rng.random_range(0.4..1.1),
                color: rgb(rng, 30.0, 200.0),
            });
        }
    }

    /// Moves cars and people forward by `dt` seconds (for animated demos).
    pub fn advance(&mut self, dt: f32) {
        for o in &mut self.objects {
            match o {
                Object::Car { z, speed, .. } => {
                    *z += *speed * dt;
                    if *z < 3.0 {
                        *z += 70.0;
                    } else if *z > 75.0 {
                        *z -= 70.0;
                    }
                }
                Object::Person { z, speed, .. } => {
                    *z += *speed * dt;
                    if *z < 2.5 {
                        *z += 40.0;
                    } else if *z > 45.0 {
                        *z -= 40.0;
                    }
                }
                _ => {}
            }
        }
    }

    /// Renders the scene into a fresh canvas.
    pub fn render(&self) -> Canvas {
        let mut c = Canvas::new(self.width, self.height, id::SKY);
        self.render_into(&mut c);
        c
    }

    /// Renders the scene into `c` (of this scene's size), reusing its storage:
    /// the demo camera draws every frame this way without allocating.
    pub fn render_into(&self, c: &mut Canvas) {
        assert_eq!(
            (c.width(), c.height()),
            (self.width, self.height),
            "canvas and scene sizes differ"
        );
        c.reset(id::SKY);
        self.draw_sky(c);
        self.draw_ground(c);
        self.draw_skyline(c);
        for f in self.facades.iter().rev() {
            self.draw_facade(c, f);
        }
        // Back layer first, then far to near; a stable insertion sort on
        // the canvas' reused index buffer (few objects, no allocation).
        let mut order = std::mem::take(&mut c.order);
        order.clear();
        order.extend(0..self.objects.len());
        let before = |a: &Object, b: &Object| {
            a.layer()
                .cmp(&b.layer())
                .then(b.depth().total_cmp(&a.depth()))
                .is_lt()
        };
        for i in 1..order.len() {
            let mut j = i;
            while j > 0 && before(&self.objects[order[j]], &self.objects[order[j - 1]]) {
                order.swap(j, j - 1);
                j -= 1;
            }
        }
        for &i in &order {
            self.draw_object(c, &self.objects[i]);
        }
        c.order = order;
        self.finish(c);
    }

    fn draw_sky(&self, c: &mut Canvas) {
        let (top, bottom, clouds) = self.sky;
        let h = self.height as f32;
        let horizon = self.cam.horizon.max(1.0);
        let seed = self.seed;
        c.fill_rect(0.0, 0.0, self.width as f32, h, id::SKY, &|x, y| {
            let t = (y as f32 / horizon).min(1.0);
            let n = value_noise(x as f32, y as f32 * 2.0, 40.0, seed);
            let cloud = ((n - 0.5) * 2.0).max(0.0) * clouds;
            let base = [0, 1, 2].map(|i| top[i] + (bottom[i] - top[i]) * t);
            base.map(|v| v + (240.0 - v) * cloud)
        });
    }

    fn draw_ground(&self, c: &mut Canvas) {
        let cam = self.cam;
        let (z0, z1) = (0.3, 400.0);
        let strip =
            |c: &mut Canvas, xa: f32, xb: f32, label: u8, paint: &dyn Fn(usize, usize) -> Rgb| {
                let pts = [
                    cam.project(xa, 0.0, z0),
                    cam.project(xb, 0.0, z0),
                    cam.project(xb, 0.0, z1),
                    cam.project(xa, 0.0, z1),
                ];
                c.fill_polygon(&pts, label, paint);
            };
        let seed = self.seed;
        let grass = self.grass;
        let far = 1e4;
        let grass_paint = |x: usize, y: usize| {
            let n = value_noise(x as f32, y as f32, 3.0, seed ^ 7) * 0.5
                + value_noise(x as f32, y as f32, 11.0, seed ^ 9) * 0.5;
            scaled(grass, 0.7 + 0.5 * n)
        };
        strip(c, -far, self.terrain.0, id::TERRAIN, &grass_paint);
        strip(c, self.terrain.1, far, id::TERRAIN, &grass_paint);
        let paving = self.paving;
        let pave_paint = |x: usize, y: usize| {
            let (gx, gz) = cam
                .ground_at(x as f32 + 0.5, y as f32 + 0.5)
                .unwrap_or((0.0, 1e3));
            let joint = gx.rem_euclid(0.6) < 0.04 || gz.rem_euclid(0.6) < 0.04;
            let n = value_noise(x as f32, y as f32, 2.0, seed ^ 3);
            scaled(paving, if joint { 0.7 } else { 0.92 + 0.16 * n })
        };
        strip(c, self.terrain.0, self.road.0, id::SIDEWALK, &pave_paint);
        strip(c, self.road.1, self.terrain.1, id::SIDEWALK, &pave_paint);
        let asphalt = self.asphalt;
        let (road_l, road_r) = self.road;
        let lanes = &self.lanes;
        let road_paint = |x: usize, y: usize| {
            let n = value_noise(x as f32, y as f32, 1.5, seed ^ 5) * 0.6
                + value_noise(x as f32, y as f32, 25.0, seed ^ 6) * 0.4;
            if let Some((gx, gz)) = cam.ground_at(x as f32 + 0.5, y as f32 + 0.5) {
                let edge = (gx - road_l).abs() < 0.12 || (gx - road_r).abs() < 0.12;
                let dash = lanes.iter().any(|&l| (gx - l).abs() < 0.08) && gz.rem_euclid(9.0) < 4.0;
                if edge || dash {
                    return [225.0, 225.0, 215.0];
                }
            }
            scaled(asphalt, 0.8 + 0.4 * n)
        };
        strip(c, road_l, road_r, id::ROAD, &road_paint);
    }

    fn draw_skyline(&self, c: &mut Canvas) {
        let base = self.cam.horizon + 1.0;
        let seed = self.seed;
        for (i, &(u, bh, color)) in self.skyline.iter().enumerate() {
            let next = self
                .skyline
                .get(i + 1)
                .map(|s| s.0)
                .unwrap_or(self.width as f32 + 10.0);
            let green = color[1] > color[0] + 15.0;
            let label = if green { id::VEGETATION } else { id::BUILDING };
            c.fill_rect(u, base - bh, next, base, label, &|x, y| {
                scaled(
                    color,
                    0.85 + 0.3 * value_noise(x as f32, y as f32, 3.0, seed ^ 11),
                )
            });
        }
    }

    fn draw_facade(&self, c: &mut Canvas, f: &Facade) {
        let cam = self.cam;
        let pts = [
            cam.project(f.x, 0.0, f.z0),
            cam.project(f.x, f.height, f.z0),
            cam.project(f.x, f.height, f.z1),
            cam.project(f.x, 0.0, f.z1),
        ];
        let shade = if f.x < 0.0 { 1.0 } else { 0.8 };
        let seed = self.seed;
        let fc = f.clone();
        c.fill_polygon(&pts, id::BUILDING, &|x, y| {
            let (wy, wz) = cam.wall_at(fc.x, x as f32 + 0.5, y as f32 + 0.5);
            let fy = wy.rem_euclid(fc.floor) / fc.floor;
            let fz = wz.rem_euclid(fc.bay) / fc.bay;
            let window = wy > 1.0 && (0.3..0.8).contains(&fy) && (0.25..0.75).contains(&fz);
            let n = value_noise(x as f32, y as f32, 2.5, seed ^ 13);
            let base = if window { fc.window } else { fc.color };
            scaled(base, shade * (0.88 + 0.24 * n))
        });
    }

    fn draw_object(&self, c: &mut Canvas, o: &Object) {
        let cam = self.cam;
        let seed = self.seed;
        match *o {
            Object::Barrier {
                x,
                z0,
                z1,
                height,
                kind,
                color,
            } => {
                let pts = [
                    cam.project(x, 0.0, z0),
                    cam.project(x, height, z0),
                    cam.project(x, height, z1),
                    cam.project(x, 0.0, z1),
                ];
                match kind {
                    BarrierKind::Wall => c.fill_polygon(&pts, id::WALL, &|px, py| {
                        let n = value_noise(px as f32, py as f32, 4.0, seed ^ 17);
                        scaled(color, 0.85 + 0.3 * n)
                    }),
                    BarrierKind::Fence => c.fill_polygon(&pts, id::FENCE, &|px, py| {
                        let (wy, wz) = cam.wall_at(x, px as f32 + 0.5, py as f32 + 0.5);
                        let bar = wz.rem_euclid(0.25) < 0.06
                            || wy.rem_euclid(0.5) < 0.06
                            || wy > height - 0.1;
                        if bar {
                            color
                        } else {
                            scaled(color, 1.6)
                        }
                    }),
                }
            }
            Object::Tree {
                x,
                z,
                trunk,
                radius,
                tone,
            } => {
                let s = cam.scale(z);
                let (u, v) = cam.project(x, 0.0, z);
                let trunk_c = [90.0 * tone, 65.0 * tone, 40.0 * tone];
                c.fill_rect(
                    u - 0.15 * s,
                    v - (trunk + radius * 0.5) * s,
                    u + 0.15 * s,
                    v,
                    id::VEGETATION,
                    &|_, _| trunk_c,
                );
                let (_, cv) = cam.project(x, trunk + radius, z);
                for (dx, dy, k) in [
                    (0.0, 0.0, 1.0),
                    (-0.5, 0.3, 0.7),
                    (0.5, 0.25, 0.75),
                    (0.0, -0.45, 0.6),
                ] {
                    c.fill_ellipse(
                        u + dx * radius * s,
                        cv + dy * radius * s,
                        radius * k * s,
                        radius * k * 0.9 * s,
                        id::VEGETATION,
                        &|px, py| {
                            let n = value_noise(px as f32, py as f32, 2.0, seed ^ 19) * 0.6
                                + value_noise(px as f32, py as f32, 7.0, seed ^ 23) * 0.4;
                            [
                                50.0 * tone * (0.6 + n),
                                110.0 * tone * (0.6 + n),
                                35.0 * tone * (0.6 + n),
                            ]
                        },
                    );
                }
            }
            Object::Pole { x, z, height, top } => {
                let s = cam.scale(z);
                let (u, v) = cam.project(x, 0.0, z);
                let (_, vt) = cam.project(x, height, z);
                c.fill_rect(u - 0.07 * s, vt, u + 0.07 * s, v, id::POLE, &|_, py| {
                    let k = 0.9 + 0.1 * hash2(0, py as i32, seed);
                    [120.0 * k, 122.0 * k, 125.0 * k]
                });
                match top {
                    PoleTop::Bare => {}
                    PoleTop::Sign { round, color } => {
                        let r = 0.35 * s;
                        if round {
                            c.fill_ellipse(u, vt, r, r, id::TRAFFIC_SIGN, &|_, _| color);
                            c.fill_ellipse(u, vt, r * 0.7, r * 0.7, id::TRAFFIC_SIGN, &|_, _| {
                                [240.0, 240.0, 240.0]
                            });
                        } else {
                            c.fill_rect(
                                u - r,
                                vt - r,
                                u + r,
                                vt + r * 0.8,
                                id::TRAFFIC_SIGN,
                                &|_, _| color,
                            );
                        }
                    }
                    PoleTop::Light => {
                        let (bw, bh) = (0.18 * s, 0.45 * s);
                        c.fill_rect(
                            u - bw,
                            vt - bh,
                            u + bw,
                            vt + bh,
                            id::TRAFFIC_LIGHT,
                            &|_, _| [30.0, 32.0, 30.0],
                        );
                        let on = (hash2(x as i32, z as i32, seed) * 3.0) as usize;
                        for (i, lamp) in [
                            [230.0, 40.0, 30.0],
                            [240.0, 180.0, 30.0],
                            [40.0, 220.0, 90.0],
                        ]
                        .iter()
                        .enumerate()
                        {
                            let k = if i == on { 1.0 } else { 0.3 };
                            let ly = vt - bh + (i as f32 + 0.5) * bh * 2.0 / 3.0;
                            c.fill_ellipse(
                                u,
                                ly,
                                bw * 0.6,
                                bw * 0.6,
                                id::TRAFFIC_LIGHT,
                                &|_, _| scaled(*lamp, k),
                            );
                        }
                    }
                }
            }
            Object::Person {
                x,
                z,
                height,
                shirt,
                pants,
                ..
            } => {
                let s = cam.scale(z);
                let (u, v) = cam.project(x, 0.0, z);
                let y = |m: f32| v - m * s;
                let skin = [200.0 * (0.6 + 0.4 * hash2(x as i32, 1, seed)), 150.0, 120.0];
                let legs = 0.47 * height;
                let p = id::PERSON;
                c.fill_rect(u - 0.17 * s, y(legs), u - 0.02 * s, v, p, &|_, _| pants);
                c.fill_rect(u + 0.02 * s, y(legs), u + 0.17 * s, v, p, &|_, _| pants);
                c.fill_rect(
                    u - 0.21 * s,
                    y(0.82 * height),
                    u + 0.21 * s,
                    y(legs - 0.05),
                    p,
                    &|_, _| shirt,
                );
                c.fill_rect(
                    u - 0.29 * s,
                    y(0.8 * height),
                    u - 0.2 * s,
                    y(0.45 * height),
                    p,
                    &|_, _| shirt,
                );
                c.fill_rect(
                    u + 0.2 * s,
                    y(0.8 * height),
                    u + 0.29 * s,
                    y(0.45 * height),
                    p,
                    &|_, _| shirt,
                );
                c.fill_ellipse(u, y(0.9 * height), 0.11 * s, 0.13 * s, p, &|_, _| skin);
            }
            Object::Car {
                x,
                z,
                color,
                side_view,
                ..
            } => {
                if side_view {
                    self.draw_parked_car(c, x, z, color)
                } else {
                    self.draw_car_rear(c, x, z, color)
                }
            }
            Object::Clutter { x, z, size, color } => {
                let s = cam.scale(z);
                let (u, v) = cam.project(x, 0.0, z);
                c.fill_rect(
                    u - size * 0.4 * s,
                    v - size * s,
                    u + size * 0.4 * s,
                    v,
                    IGNORE_LABEL,
                    &|_, _| color,
                );
            }
        }
    }

    fn draw_car_rear(&self, c: &mut Canvas, x: f32, z: f32, color: Rgb) {
        let cam = self.cam;
        let s = cam.scale(z);
        let (u, v) = cam.project(x, 0.0, z);
        let y = |m: f32| v - m * s;
        let car = id::CAR;
        c.shade_rect(u - 1.0 * s, v - 0.05 * s, u + 1.0 * s, v + 0.12 * s, 0.5);
        c.fill_rect(u - 0.9 * s, y(0.35), u - 0.6 * s, v, car, &|_, _| [20.0; 3]);
        c.fill_rect(u + 0.6 * s, y(0.35), u + 0.9 * s, v, car, &|_, _| [20.0; 3]);
        c.fill_rect(u - 0.9 * s, y(0.9), u + 0.9 * s, y(0.25), car, &|_, py| {
            scaled(
                color,
                0.85 + 0.15 * ((py as f32 - y(0.9)) / (0.65 * s)).clamp(0.0, 1.0),
            )
        });
        c.fill_rect(u - 0.75 * s, y(1.45), u + 0.75 * s, y(0.9), car, &|_, _| {
            scaled(color, 0.9)
        });
        c.fill_rect(u - 0.65 * s, y(1.38), u + 0.65 * s, y(1.0), car, &|_, _| {
            [40.0, 50.0, 60.0]
        });
        c.fill_rect(u - 0.88 * s, y(0.8), u - 0.65 * s, y(0.65), car, &|_, _| {
            [200.0, 20.0, 20.0]
        });
        c.fill_rect(u + 0.65 * s, y(0.8), u + 0.88 * s, y(0.65), car, &|_, _| {
            [200.0, 20.0, 20.0]
        });
        c.fill_rect(u - 0.3 * s, y(0.55), u + 0.3 * s, y(0.42), car, &|_, _| {
            [230.0, 230.0, 210.0]
        });
    }

    fn draw_parked_car(&self, c: &mut Canvas, x: f32, z: f32, color: Rgb) {
        let cam = self.cam;
        let car = id::CAR;
        let quad = |y0: f32, y1: f32, za: f32, zb: f32| {
            [
                cam.project(x, y0, za),
                cam.project(x, y1, za),
                cam.project(x, y1, zb),
                cam.project(x, y0, zb),
            ]
        };
        c.fill_polygon(&quad(0.2, 0.9, z, z + 4.3), car, &|_, _| color);
        c.fill_polygon(&quad(0.9, 1.45, z + 1.0, z + 3.3), car, &|_, _| {
            scaled(color, 0.9)
        });
        c.fill_polygon(&quad(0.97, 1.38, z + 1.15, z + 3.15), car, &|_, _| {
            [40.0, 50.0, 60.0]
        });
        for wz in [z + 0.8, z + 3.5] {
            let s = cam.scale(wz);
            let (u, v) = cam.project(x, 0.32, wz);
            c.fill_ellipse(u, v, 0.12 * s, 0.32 * s, car, &|_, _| [20.0; 3]);
        }
    }

    fn finish(&self, c: &mut Canvas) {
        if self.blur {
            c.blur();
        }
        let (gain, sigma, seed) = (self.gain, self.noise, self.seed);
        c.map_colors(|i, p| {
            // Approximately normal noise from the sum of three uniforms.
            let n =
                (hash2(i as i32, 0, seed) + hash2(i as i32, 1, seed) + hash2(i as i32, 2, seed)
                    - 1.5)
                    * 2.0;
            [0, 1, 2].map(|k| p[k] * gain[k] + n * sigma)
        });
    }
}
